"""``jingle preprocess pointer`` on the session's local Ray: labels from pointers files,
EDLs and alignment; the invariant on write; reruns; rejects."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from jingle.datasets.edits import make_conform_pair, write_pointer_corpus
from jingle.datasets.features import MelFeatures
from jingle.datasets.pointer_preprocess import row_to_arrays
from jingle.datasets.shards import REJECTS, read_manifest, shard_paths
from jingle.pipelines import preprocess_pointer
from tests.conftest import tone, write

pytestmark = pytest.mark.ray

FEATURES = MelFeatures()


def preprocess(pairs: Path, out: Path) -> preprocess_pointer.Summary:
    return preprocess_pointer.run(preprocess_pointer.spec(pairs=str(pairs), out=out, rows_per_shard=2, quiet=True))


def stored_rows(out: Path) -> dict[str, dict]:
    rows = {}
    for path in shard_paths(out):
        for row in pq.read_table(path).to_pylist():
            rows[row["pair_id"]] = row
    return rows


@pytest.fixture(scope="module")
def pairs():
    return [make_conform_pair(seed, seconds=8.0, features=FEATURES, processed=False) for seed in range(3)]


@pytest.mark.parametrize("labels", ["pointers", "edl", "none"])
def test_every_label_source_gives_the_known_pointers(ray_session, tmp_path, pairs, labels):
    write_pointer_corpus(tmp_path / "pairs", pairs, FEATURES, labels=labels)
    summary = preprocess(tmp_path / "pairs", tmp_path / "out")
    assert summary.pairs_processed == 3 and not summary.rejects
    manifest = read_manifest(tmp_path / "out")
    assert manifest["kind"] == "pointer" and manifest["settings"]["features"] == FEATURES.to_dict()
    rows = stored_rows(tmp_path / "out")
    for pair in pairs:
        row = rows[pair.name]
        raw, edit, pointers, confidence = row_to_arrays(row)
        assert raw.shape == (FEATURES.n_mels, FEATURES.frames_for(len(pair.raw)))
        assert edit.shape == (FEATURES.n_mels, FEATURES.frames_for(len(pair.edit)))
        assert row["frame_rate"] == FEATURES.frame_rate and row["hop_length"] == FEATURES.hop_length
        assert row["label_source"] == {"pointers": "pointers", "edl": "edl", "none": "alignment"}[labels]
        assert len(pointers) == edit.shape[1] and pointers.min() >= 0 and pointers.max() < raw.shape[1]
        within = np.mean(np.abs(pointers - pair.pointers) <= 2)
        assert within >= (0.95 if labels == "none" else 1.0), within
        if labels == "none":
            assert 0 <= confidence.min() and confidence.max() <= 1 and confidence.mean() > 0.5
        else:
            assert np.all(confidence == 1)


def test_rerun_does_nothing_and_new_pairs_are_added(ray_session, tmp_path, pairs):
    write_pointer_corpus(tmp_path / "pairs", pairs[:2], FEATURES)
    preprocess(tmp_path / "pairs", tmp_path / "out")
    before = sorted(p.name for p in (tmp_path / "out" / "shards").iterdir())
    again = preprocess(tmp_path / "pairs", tmp_path / "out")
    assert again.pairs_processed == 0 and "nothing to do" in again.report()
    assert sorted(p.name for p in (tmp_path / "out" / "shards").iterdir()) == before
    write_pointer_corpus(tmp_path / "pairs", pairs[2:], FEATURES)
    more = preprocess(tmp_path / "pairs", tmp_path / "out")
    assert more.pairs_processed == 1 and set(stored_rows(tmp_path / "out")) == {p.name for p in pairs}


def test_bad_labels_and_audio_become_rejects(ray_session, tmp_path, pairs):
    root = tmp_path / "pairs"
    write_pointer_corpus(root, pairs[:1], FEATURES)
    good = pairs[0]
    # pointers outside the raw recording: the invariant refuses them
    write(root / "raw" / "outside.wav", good.raw, FEATURES.sample_rate, "FLOAT")
    write(root / "edit" / "outside.wav", good.edit, FEATURES.sample_rate, "FLOAT")
    np.save(root / "pointers" / "outside.npy", good.pointers + 10_000)
    # one pointer short of the edit's frames
    write(root / "raw" / "short.wav", good.raw, FEATURES.sample_rate, "FLOAT")
    write(root / "edit" / "short.wav", good.edit, FEATURES.sample_rate, "FLOAT")
    np.save(root / "pointers" / "short.npy", good.pointers[:-5])
    # an EDL that is not JSON, and one past the raw's end
    (root / "edl").mkdir()
    for name, text in (("notjson", "[[0, 1],"), ("pastend", json.dumps([[0.0, 1.0], [7.5, 60.0]]))):
        write(root / "raw" / f"{name}.wav", good.raw, FEATURES.sample_rate, "FLOAT")
        write(root / "edit" / f"{name}.wav", good.edit, FEATURES.sample_rate, "FLOAT")
        (root / "edl" / f"{name}.json").write_text(text)
    # an edit without its raw, a truncated raw, both label kinds
    write(root / "edit" / "orphan.wav", tone(1.0, 16_000), 16_000)
    write(root / "raw" / "truncated.wav", tone(2.0, 16_000), 16_000)
    write(root / "edit" / "truncated.wav", tone(1.0, 16_000), 16_000)
    data = (root / "raw" / "truncated.wav").read_bytes()
    (root / "raw" / "truncated.wav").write_bytes(data[: len(data) // 2])
    write(root / "raw" / "both.wav", good.raw, FEATURES.sample_rate, "FLOAT")
    write(root / "edit" / "both.wav", good.edit, FEATURES.sample_rate, "FLOAT")
    np.save(root / "pointers" / "both.npy", good.pointers)
    (root / "edl" / "both.json").write_text(json.dumps([[0.0, 1.0]]))

    summary = preprocess(root, tmp_path / "out")
    reasons = {r.pair_id: r.reason for r in summary.rejects}
    assert set(stored_rows(tmp_path / "out")) == {good.name}
    assert "outside the raw recording" in reasons["outside"]
    assert "values for" in reasons["short"] and "edit frames" in reasons["short"]
    assert reasons["notjson"].startswith("edl: not readable JSON")
    assert "not inside the raw recording" in reasons["pastend"]
    assert reasons["orphan"].startswith("no raw")
    assert "truncated" in reasons["truncated"] or "declares" in reasons["truncated"]
    assert "both pointers/ and edl/" in reasons["both"]
    paths = {r.pair_id: r.path for r in summary.rejects}  # the file to blame
    assert paths["outside"].endswith("pointers/outside.npy") and paths["notjson"].endswith("edl/notjson.json")
    assert paths["truncated"].endswith("raw/truncated.wav")
    table = pq.read_table(tmp_path / "out" / REJECTS)
    assert set(table["pair_id"].to_pylist()) == set(reasons)
    # rejects are remembered: a rerun reads nothing again and reports the same
    again = preprocess(root, tmp_path / "out")
    assert again.pairs_processed == 0 and {r.pair_id for r in again.rejects} == set(reasons)


def test_cli_refuses_a_missing_folder(tmp_path, capsys):
    code = preprocess_pointer.main(["--pairs", str(tmp_path / "nope"), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err
