"""The benchmarks run (tiny corpora; the figures themselves come from full runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.ray, pytest.mark.bench]  # not in the default run: `pytest -m bench`


def test_preprocess_benchmark_smoke(ray_address, tmp_path):
    result = subprocess.run(
        [sys.executable, "bench/preprocess.py", "--smoke", "--codec", "mel", "--work", str(tmp_path), "--ray-address", ray_address],
        cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pipeline/loop" in result.stdout and "pipeline/ceiling" in result.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["codecs"]["mel"]["pipeline"]["segments"] == results["codecs"]["mel"]["loop"]["segments"] > 0


def test_schedule_benchmark_smoke(ray_address, tmp_path):
    from tests.conftest import run_benchmark

    result = run_benchmark("schedule.py", ray_address, "--smoke", "--work", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "answer: nothing to do: 20 pairs already in" in result.stdout
    assert "busy:   jingle preprocess fusion: busy: --out" in result.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["pairs"] == 20 and results["nothing_to_do_s"] < results["first_run_s"]
