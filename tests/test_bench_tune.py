"""The search benchmark runs (3 samples of 2 epochs on a tiny corpus; its figures come from
full runs): both searches finish, draw the same configurations, and the fixed costs are measured."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_benchmark

pytestmark = [pytest.mark.ray, pytest.mark.bench]  # not in the default run: `pytest -m bench`


def test_tune_benchmark_smoke(ray_address, tmp_path):
    result = run_benchmark("tune.py", ray_address, "--smoke", "--work", str(tmp_path / "work"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ASHA / full: trial-epochs" in result.stdout
    results = json.loads((tmp_path / "work" / "results.json").read_text())
    assert results["full"]["trial_epochs"] == 3 * 2  # no early stopping: every trial to --max-epochs
    assert 3 <= results["asha"]["trial_epochs"] <= 6
    costs = results["fixed_costs"]
    assert 0 < costs["epoch_overhead_seconds"] <= costs["epoch_seconds"] and costs["trial_startup_seconds"] > 0
