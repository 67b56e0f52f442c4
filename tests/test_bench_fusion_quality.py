"""The fusion quality benchmark runs end to end (one epoch on a tiny corpus; its figures come
from full runs): the model, every shortcut and the rendered arrangement are scored on the
held-out pairs with their note figures, and the arrangement wins."""

from __future__ import annotations

import json

import pytest

from jingle.evaluation.shortcuts import ALL_SHORTCUTS
from tests.conftest import run_benchmark

pytestmark = [pytest.mark.ray, pytest.mark.bench]  # not in the default run: `pytest -m bench`


def test_fusion_quality_benchmark_smoke(ray_address, tmp_path):
    result = run_benchmark("fusion_quality.py", ray_address, "--smoke", "--work", str(tmp_path / "work"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "/ best shortcut" in result.stdout
    results = json.loads((tmp_path / "work" / "results.json").read_text())
    means = results["means"]
    assert set(means) == {"model", "arrangement", "arrangement_decoded", *ALL_SHORTCUTS}
    assert means["arrangement"]["score"] > max(means[name]["score"] for name in ALL_SHORTCUTS)
    assert {"note_onset_f1", "pitch_class_precision", "pitch_class_recall", "clarity"} <= set(means["arrangement"])
    # a tiny model may write no notes: its precision is then undefined (left out), never NaN
    assert {"note_onset_f1", "pitch_class_recall", "clarity"} <= set(means["model"])
    assert results["steps"] > 0 and results["timings"]["train model"] > 0
