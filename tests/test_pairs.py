"""datasets/pairs.py: folder and manifest discovery, header checks, fingerprints."""

from __future__ import annotations

import json
import os

import pytest

from jingle.datasets.audio import Segmenting
from jingle.datasets.pairs import InputError, check_pairs, discover_fusion_pairs, fingerprint_files
from tests.conftest import tone, write, write_pair


def test_folder_pairs_match_by_relative_path(tmp_path):
    write_pair(tmp_path, "a", 1.0)
    write_pair(tmp_path, "rock/b", 1.0)
    found = discover_fusion_pairs(tmp_path)
    assert [p.pair_id for p in found.pairs] == ["a", "rock/b"]
    assert found.pairs[1].input_path.endswith("input/rock/b.wav") and found.pairs[1].target_path.endswith("target/rock/b.wav")
    assert found.rejects == []


def test_unmatched_files_are_rejected_with_the_expected_partner(tmp_path):
    write_pair(tmp_path, "a", 1.0)
    write(tmp_path / "input" / "lonely.wav", tone(1.0, 24_000), 24_000)
    write(tmp_path / "target" / "orphan.wav", tone(1.0, 24_000), 24_000)
    found = discover_fusion_pairs(tmp_path)
    reasons = {r.pair_id: r.reason for r in found.rejects}
    assert reasons["lonely"] == f"no target: expected {tmp_path / 'target' / 'lonely.wav'}"
    assert reasons["orphan"].startswith("no input: expected")
    assert [p.pair_id for p in found.pairs] == ["a"]


def test_missing_source_or_layout_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        discover_fusion_pairs(tmp_path / "nowhere")
    with pytest.raises(InputError, match="expected folders"):
        discover_fusion_pairs(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="neither a folder"):
        discover_fusion_pairs(tmp_path / "notes.txt")


def test_csv_manifest_paths_are_relative_to_it(tmp_path):
    write_pair(tmp_path / "audio", "a", 1.0)
    manifest = tmp_path / "pairs.csv"
    manifest.write_text("input,target,pair_id\naudio/input/a.wav,audio/target/a.wav,first\naudio/input/x.wav,audio/target/x.wav,\n")
    found = discover_fusion_pairs(manifest)
    assert [p.pair_id for p in found.pairs] == ["first", "audio/input/x"]
    assert found.pairs[0].input_path == str(tmp_path / "audio" / "input" / "a.wav")


def test_jsonl_manifest_and_a_row_pointing_nowhere(tmp_path):
    write_pair(tmp_path, "a", 1.0)
    manifest = tmp_path / "pairs.jsonl"
    rows = [{"input": "input/a.wav", "target": "target/a.wav"}, {"input": "input/gone.wav", "target": "target/gone.wav", "pair_id": "gone"}]
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    found = discover_fusion_pairs(manifest)
    checked, rejects = check_pairs(found.pairs, Segmenting(segment_seconds=0.5))
    assert [c.pair.pair_id for c in checked] == ["input/a"]
    assert [(r.pair_id, r.reason) for r in rejects] == [("gone", "input: file does not exist"), ("gone", "target: file does not exist")]


def test_manifest_errors(tmp_path):
    bad_columns = tmp_path / "a.csv"
    bad_columns.write_text("left,right\nx.wav,y.wav\n")
    with pytest.raises(InputError, match="needs columns 'input' and 'target'"):
        discover_fusion_pairs(bad_columns)
    bad_json = tmp_path / "b.jsonl"
    bad_json.write_text('{"input": "x.wav", "target": "y.wav"}\nnot json\n')
    with pytest.raises(InputError, match="line 2 is not JSON"):
        discover_fusion_pairs(bad_json)
    duplicate = tmp_path / "c.csv"
    duplicate.write_text("input,target,pair_id\nx.wav,y.wav,p\nz.wav,w.wav,p\n")
    found = discover_fusion_pairs(duplicate)
    assert len(found.pairs) == 1 and "duplicate pair_id 'p'" in found.rejects[0].reason


def test_check_rejects_short_files_from_the_header(tmp_path):
    write_pair(tmp_path, "long", 3.0)
    write_pair(tmp_path, "short", 1.5)
    checked, rejects = check_pairs(discover_fusion_pairs(tmp_path).pairs, Segmenting(segment_seconds=2))
    assert [c.pair.pair_id for c in checked] == ["long"]
    assert {r.reason for r in rejects} == {
        "input: shorter than one segment (1.50 s < 2 s)",
        "target: shorter than one segment (1.50 s < 2 s)",
    }


def test_fingerprint_follows_size_and_mtime(tmp_path):
    path = write(tmp_path / "a.wav", tone(1.0, 24_000), 24_000)
    first = fingerprint_files(str(path))
    assert fingerprint_files(str(path)) == first
    os.utime(path, ns=(1, 1))
    assert fingerprint_files(str(path)) != first
