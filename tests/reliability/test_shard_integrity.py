"""A lost, truncated or corrupt shard: preprocessing makes its rows again, training refuses it.

No Ray: the shard store and the training's shard reader, on shards written as preprocessing
writes them (``write_shard`` + ``commit``), damaged the three ways a disk or a user damages
them: deleted, truncated, and one byte changed at the same size (only ``--verify``'s sha256
sees that one).
"""

from __future__ import annotations

import json

import pytest

from jingle.datasets.pairs import InputError
from jingle.datasets.shards import MANIFEST, ShardStore
from jingle.pipelines.shard_data import ShardData
from tests.test_shards import SETTINGS, commit_rows

FINGERPRINTS = {"a": "f1", "b": "f2", "c": "f3", "d": "f4"}
TOTALS = {"a": 1, "b": 1, "c": 1, "d": 1}


def write_clean(root) -> dict[str, str]:
    """Three shards: (a, b) together, c alone, d alone; their names by what they hold."""
    with ShardStore(root, kind="fusion", settings=SETTINGS) as store:
        names = {
            "ab": commit_rows(store, [("a", 0), ("b", 0)], {"a": 1, "b": 1}, {"a": "f1", "b": "f2"}),
            "c": commit_rows(store, [("c", 0)], {"c": 1}, {"c": "f3"}),
            "d": commit_rows(store, [("d", 0)], {"d": 1}, {"d": "f4"}),
        }
        store.finish([])
    return names


def damage(root, names) -> None:
    shards = root / "shards"
    (shards / names["c"]).unlink()  # lost
    data = (shards / names["ab"]).read_bytes()
    (shards / names["ab"]).write_bytes(data[: len(data) // 2])  # truncated
    data = bytearray((shards / names["d"]).read_bytes())
    data[len(data) // 2] ^= 0xFF  # corrupt, same size
    (shards / names["d"]).write_bytes(bytes(data))


def test_a_rerun_drops_lost_and_truncated_shards_and_makes_their_rows_again(tmp_path):
    names = write_clean(tmp_path)
    clean = json.loads((tmp_path / MANIFEST).read_text())["files"]
    damage(tmp_path, names)

    with ShardStore(tmp_path, kind="fusion", settings=SETTINGS) as store:
        assert dict(store.damaged_files) == {
            names["c"]: "is missing",
            names["ab"]: f"has {clean[names['ab']]['bytes'] // 2} bytes, the manifest says {clean[names['ab']]['bytes']} "
                         "(truncated or replaced)",
        }
        # the manifest no longer counts them, and the truncated file is gone
        on_disk = json.loads((tmp_path / MANIFEST).read_text())["files"]
        assert sorted(on_disk) == [names["d"]] and not (tmp_path / "shards" / names["ab"]).exists()
        # every pair of a dropped shard is made again, the same-size corruption is not seen
        work = store.plan(FINGERPRINTS)
        assert sorted((item.item_id, item.skip) for item in work) == [("a", ()), ("b", ()), ("c", ())]
        commit_rows(store, [("a", 0), ("b", 0)], {"a": 1, "b": 1}, {"a": "f1", "b": "f2"})
        commit_rows(store, [("c", 0)], {"c": 1}, {"c": "f3"})
        store.finish([])
    # the repaired folder holds what the clean run wrote: the same files, bytes and hashes
    assert json.loads((tmp_path / MANIFEST).read_text())["files"] == clean

    with ShardStore(tmp_path, kind="fusion", settings=SETTINGS, verify=True) as store:
        assert store.damaged_files == [(names["d"], "does not match the manifest's sha256 (corrupt)")]
        assert [item.item_id for item in store.plan(FINGERPRINTS)] == ["d"]


def test_a_clean_folder_is_left_alone_even_with_verify(tmp_path):
    names = write_clean(tmp_path)
    before = (tmp_path / MANIFEST).read_text()
    with ShardStore(tmp_path, kind="fusion", settings=SETTINGS, verify=True) as store:
        assert store.damaged_files == [] and store.plan(FINGERPRINTS) == []
    assert (tmp_path / MANIFEST).read_text() == before and all((tmp_path / "shards" / name).exists() for name in names.values())


@pytest.mark.parametrize("how, says", [("lost", "is missing"), ("truncated", "bytes, the manifest says")])
def test_training_refuses_a_lost_or_truncated_shard_in_one_line(tmp_path, how, says):
    names = write_clean(tmp_path)
    assert sorted(ShardData.open(tmp_path).rows_by_pair) == ["a", "b", "c", "d"]  # intact: opens
    path = tmp_path / "shards" / names["ab"]
    if how == "lost":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(InputError) as refused:
        ShardData.open(tmp_path, flag="--data")
    message = str(refused.value)
    assert message.startswith(f"--data {tmp_path}: shard shards/{names['ab']} ") and says in message
    assert "rerun jingle preprocess fusion" in message and "\n" not in message


def test_jingle_train_exits_2_on_a_lost_shard_before_starting_anything(tmp_path, capsys):
    from jingle.pipelines import train_fusion

    names = write_clean(tmp_path / "data")
    (tmp_path / "data" / "shards" / names["c"]).unlink()
    code = train_fusion.main(["--data", str(tmp_path / "data"), "--config", "configs/fusion.json", "--storage", str(tmp_path / "runs")])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1 and f"shard shards/{names['c']} is missing" in error[0], error
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("checkpoint_*"))
