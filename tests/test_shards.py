"""datasets/shards.py without Ray: atomic shards, journal recovery, planning reruns."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jingle.datasets.pairs import InputError, Reject
from jingle.datasets.shards import (
    JOURNAL,
    MANIFEST,
    ShardStore,
    fusion_schema,
    latents_to_numpy,
    shard_name,
    shard_paths,
    write_shard,
)

SETTINGS = {"codec": {"id": "mel-test"}, "segmenting": {"segment_seconds": 2.0}, "latent_dtype": "float16"}


def table_for(keys, dim=4, frames=3):
    schema = fusion_schema(dim=dim, frames=frames, latent_dtype="float16", codec_id="mel-test")
    latents = np.arange(len(keys) * dim * frames, dtype=np.float16).reshape(len(keys), dim, frames)
    latent_type = schema.field("input_latent").type
    columns = {
        "pair_id": [k[0] for k in keys],
        "segment_index": pa.array([k[1] for k in keys], pa.int32()),
        "input_path": ["in.wav"] * len(keys),
        "target_path": ["tg.wav"] * len(keys),
        "start_s": [2.0 * k[1] for k in keys],
        "end_s": [2.0 * k[1] + 2 for k in keys],
        "codec_id": ["mel-test"] * len(keys),
        "sample_rate": pa.array([24_000] * len(keys), pa.int32()),
        "frame_rate": [75.0] * len(keys),
        "audio_sha256": ["h"] * len(keys),
        "input_latent": pa.FixedShapeTensorArray.from_numpy_ndarray(latents).cast(latent_type),
        "target_latent": pa.FixedShapeTensorArray.from_numpy_ndarray(latents).cast(latent_type),
    }
    return pa.table(columns, schema=schema)


def commit_rows(store, keys, totals, fingerprints):
    entry = write_shard(store.root, table_for(keys), keys, "mel-test")
    items = {}
    for item_id, index in keys:
        items.setdefault(item_id, []).append(index)
    store.commit(
        {
            **entry,
            "items": items,
            "audio_seconds": 2.0 * len(keys),
            "encoded_on": ["node-1"],
            "segments_total": totals,
            "rejects": {},
            "fingerprints": fingerprints,
        }
    )
    return entry["file"]


def test_shard_names_depend_on_rows_not_order():
    assert shard_name([("a", 0), ("b", 1)], "c") == shard_name([("b", 1), ("a", 0)], "c")
    assert shard_name([("a", 0)], "c") != shard_name([("a", 1)], "c")
    assert shard_name([("a", 0)], "c") != shard_name([("a", 0)], "d")


def test_rows_read_back_with_plain_pyarrow(tmp_path):
    with ShardStore(tmp_path, kind="fusion", settings=SETTINGS) as store:
        commit_rows(store, [("a", 0), ("a", 1)], {"a": 2}, {"a": "f1"})
        store.finish([])
    table = pq.read_table(shard_paths(tmp_path)[0])
    assert table.schema.metadata[b"jingle.codec_id"] == b"mel-test"
    latents = latents_to_numpy(table["input_latent"])
    assert latents.shape == (2, 4, 3) and latents.dtype == np.float16
    assert latents[1, 0, 0] == 12


def test_finish_writes_manifest_and_rejects_and_drops_the_journal(tmp_path):
    with ShardStore(tmp_path, kind="fusion", settings=SETTINGS) as store:
        assert [w.item_id for w in store.plan({"a": "f1", "b": "f2"})] == ["a", "b"]
        name = commit_rows(store, [("a", 0), ("a", 1)], {"a": 2}, {"a": "f1"})
        assert (tmp_path / JOURNAL).exists()
        store.finish([Reject("b", "/x/b.wav", "input: silent", "decode")])
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["files"][name]["rows"] == 2 and manifest["items"]["a"]["segments_total"] == 2
    assert not (tmp_path / JOURNAL).exists()
    assert pq.read_table(tmp_path / "rejects.parquet").to_pylist() == [
        {"path": "/x/b.wav", "reason": "input: silent", "pair_id": "b", "stage": "decode"}
    ]
    with ShardStore(tmp_path, kind="fusion", settings=SETTINGS) as store:
        assert [w.item_id for w in store.plan({"a": "f1", "b": "f2"})] == ["b"]


def test_a_dead_runs_journal_is_recovered_and_orphans_removed(tmp_path):
    store = ShardStore(tmp_path, kind="fusion", settings=SETTINGS)
    committed = commit_rows(store, [("a", 0), ("a", 1), ("b", 0)], {"a": 3, "b": 1}, {"a": "f1", "b": "f2"})
    # renamed into place, but the run died before its journal line
    orphan = write_shard(tmp_path, table_for([("a", 2)]), [("a", 2)], "mel-test")["file"]
    (tmp_path / "shards" / ".tmp-123.parquet").write_bytes(b"partial")
    with open(tmp_path / JOURNAL, "a") as journal:
        journal.write('{"file": "torn')  # the line being written when it died
    store._close_journal()
    store._lock._handle.close()  # the process is gone: the kernel drops its flock

    with ShardStore(tmp_path, kind="fusion", settings=SETTINGS) as again:
        assert again.recovered_shards == 1 and again.removed_orphans == 1
        assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == [committed]
        assert orphan != committed
        work = again.plan({"a": "f1", "b": "f2"})
        assert [(w.item_id, w.skip) for w in work] == [("a", (0, 1))]


def test_a_changed_pair_invalidates_its_shards_and_their_neighbours(tmp_path):
    with ShardStore(tmp_path, kind="fusion", settings=SETTINGS) as store:
        shared = commit_rows(store, [("a", 0), ("b", 0)], {"a": 1, "b": 1}, {"a": "f1", "b": "f2"})
        alone = commit_rows(store, [("c", 0)], {"c": 1}, {"c": "f3"})
        store.finish([])
    with ShardStore(tmp_path, kind="fusion", settings=SETTINGS) as store:
        work = store.plan({"a": "CHANGED", "b": "f2", "c": "f3"})
        assert sorted((w.item_id, w.skip) for w in work) == [("a", ()), ("b", ())]
        assert not (tmp_path / "shards" / shared).exists() and (tmp_path / "shards" / alone).exists()
        assert store.invalidated_files == 1


def test_decode_rejects_are_not_retried_until_the_file_changes(tmp_path):
    with ShardStore(tmp_path, kind="fusion", settings=SETTINGS) as store:
        reject = {"pair_id": "a", "path": "/a.wav", "reason": "input: silent", "stage": "decode"}
        store.commit({"file": None, "rows": 0, "bytes": 0, "sha256": "", "items": {}, "audio_seconds": 0.0,
                      "segments_total": {}, "rejects": {"a": [reject]}, "fingerprints": {"a": "f1"}})
        store.finish(store.all_rejects([], present={"a"}))
    with ShardStore(tmp_path, kind="fusion", settings=SETTINGS) as store:
        assert store.plan({"a": "f1"}) == []
        assert [r.reason for r in store.all_rejects([], present={"a"})] == ["input: silent"]
        assert store.all_rejects([], present=set()) == []
        assert [w.item_id for w in store.plan({"a": "f2"})] == ["a"]


def test_other_settings_are_refused(tmp_path):
    with ShardStore(tmp_path, kind="fusion", settings=SETTINGS) as store:
        store.finish([])
    other = {**SETTINGS, "segmenting": {"segment_seconds": 24.0}}
    with pytest.raises(InputError, match="written with other settings.*segmenting"):
        ShardStore(tmp_path, kind="fusion", settings=other)
    with pytest.raises(InputError, match="holds 'fusion' shards, not 'pointer'"):
        ShardStore(tmp_path, kind="pointer", settings=SETTINGS)


def test_two_runs_cannot_share_a_folder(tmp_path):
    with ShardStore(tmp_path, kind="fusion", settings=SETTINGS):
        with pytest.raises(InputError, match="being written by another jingle run"):
            ShardStore(tmp_path, kind="fusion", settings=SETTINGS)
