"""The training benchmark runs (two steps on 1 s segments; the figures come from full runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.ray, pytest.mark.bench]  # not in the default run: `pytest -m bench`


def test_train_benchmark_smoke(ray_address, tmp_path):
    result = subprocess.run(
        [sys.executable, "bench/train.py", "--smoke", "--work", str(tmp_path), "--ray-address", ray_address],
        cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ}, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ray-train 1 worker vs plain loop" in result.stdout and "aim >= 0.9" in result.stdout
    assert "ray-train 2 workers vs 1" in result.stdout and "segments/s" in result.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    assert {"machine", "plain", "ray_train", "ray_1_worker_of_plain", "ray_2_workers_of_1_segments", "aim_met"} <= results.keys()
    assert results["plain"]["steps"] == results["steps"] == 2
    # Timed inside the loop, between its mid-epoch reports: every 2 steps, after 2 of warm-up;
    # one worker has the epoch to itself (10 steps), two workers share it (5 each).
    runs = {run["workers"]: run for run in results["ray_train_runs"]}
    assert runs[1]["epoch_steps"] == 10 and runs[1]["report_steps"] == [2, 4, 6, 8]
    assert runs[2]["epoch_steps"] == 5 and runs[2]["report_steps"] == [2, 4]
    assert results["ray_train"]["1"]["steps"] == 6 and results["ray_train"]["2"]["steps"] == 2
    assert results["worker_threads_probe"]["torch_threads"] >= 1
