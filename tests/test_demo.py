"""``jingle demo``, the main job, end to end: both models from generated audio to a fused
pair and a conformed edit, and a pointer network that learned enough to show it."""

from __future__ import annotations

import json
import re

import pytest

from jingle.datasets.shards import shard_paths
from jingle.evaluation.shortcuts import ALL_SHORTCUTS

pytestmark = pytest.mark.ray


def test_demo_runs_end_to_end(ray_session, tmp_path, capsys):
    from jingle.pipelines import demo

    out = tmp_path / "demo"
    assert demo.main(["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "preprocessed 8 pairs" in printed and "trained to step" in printed and "where things are" in printed
    assert len(shard_paths(out / "shards-mel")) >= 1
    fused = out / "fused" / "held_out.wav"
    assert fused.exists() and fused.with_suffix(".png").stat().st_size > 10_000
    report = json.loads(fused.with_suffix(".json").read_text())
    assert report["duration_seconds"] == pytest.approx(20.0, abs=0.05)
    assert (out / "runs" / "mlflow.db").exists()
    # the fusion is scored against the shortcuts and the rendered arrangement, which wins
    scored = json.loads((out / "evaluation" / "report.json").read_text())["pairs"][0]["outputs"]
    scores = {entry["name"]: entry["score"] for entry in scored}
    assert {"model", "arrangement", "arrangement_decoded", "plain_mix", "smeared_arrangement"} <= set(scores)
    assert scores["arrangement"] == max(scores.values())
    # the demo's model writes an arrangement: it beats every shortcut (measured 0.66 against 0.43)
    assert scores["model"] > max(scores[name] for name in ALL_SHORTCUTS) + 0.05, scores
    assert "held-out fusion, against the rendered arrangement (decoded through the codec" in printed
    assert re.search(r"note onsets on the input's hits, F1 +\d\.\d{3} +\d\.\d{3}", printed)
    # the pointer network's half: alignment-labelled pairs, a trained conform model, two EDLs
    assert "preprocessed 8 pairs" in printed.split("trained to step")[1]
    for method in ("network", "align"):
        edl = json.loads((out / "conformed" / f"{method}.json").read_text())
        assert edl["method"] == method and edl["segments"]
    # the network conforms the held-out processed edit (3 training steps of old got 0%)
    network = re.search(r"conformed \(network\).*?(\d+)% of edit frames within ±2 frames of the truth", printed)
    assert network and int(network.group(1)) >= 50, printed[-1500:]
    # where the demo's time went, printed for the user
    assert re.search(r"the demo took \d+ s: \d+ s training \(\d+%\), of which \d+ s in training steps", printed)
