"""The fusion quality benchmark runs end to end (one epoch on a tiny corpus; its figures come
from full runs): the model, every shortcut and the rendered arrangement are scored on the
held-out pairs, and the arrangement wins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from models.arrangement import SHORTCUTS

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.ray


def test_fusion_quality_benchmark_smoke(ray_address, tmp_path):
    result = subprocess.run(
        [sys.executable, "bench/fusion_quality.py", "--smoke", "--work", str(tmp_path / "work"), "--ray-address", ray_address],
        cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ}, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "/ best shortcut" in result.stdout
    results = json.loads((tmp_path / "work" / "results.json").read_text())
    means = results["means"]
    assert set(means) == {"model", "arrangement", *SHORTCUTS}
    assert means["arrangement"]["score"] > max(means[name]["score"] for name in SHORTCUTS)
    assert results["steps"] > 0 and results["timings"]["train"] > 0
