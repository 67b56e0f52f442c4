"""The benchmarks run (tiny corpora; the figures themselves come from full runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.ray


def test_preprocess_benchmark_smoke(ray_address, tmp_path):
    result = subprocess.run(
        [sys.executable, "bench/preprocess.py", "--smoke", "--codec", "mel", "--work", str(tmp_path), "--ray-address", ray_address],
        cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pipeline/loop" in result.stdout and "pipeline/ceiling" in result.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["codecs"]["mel"]["pipeline"]["segments"] == results["codecs"]["mel"]["loop"]["segments"] > 0
