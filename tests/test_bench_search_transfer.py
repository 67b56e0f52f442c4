"""The search-transfer benchmark runs (two searches of 2 trials of 1 epoch on tiny corpora;
its figures come from full runs): every trial's best checkpoint is scored on the test
pairs, the rank correlation is computed, and the default and best configs are trained and
scored."""

from __future__ import annotations

import json

import pytest

from bench.search_transfer import spearman
from tests.conftest import run_benchmark



def test_spearman_is_the_rank_correlation():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [1, 100, 2, 3]) == pytest.approx(0.4)  # ranks, not values
    assert spearman([1, 2], [1, 2]) is None  # too few trials to rank


@pytest.mark.ray
@pytest.mark.bench  # not in the default run: `pytest -m bench`
def test_search_transfer_benchmark_smoke(ray_address, tmp_path):
    result = run_benchmark("search_transfer.py", ray_address, "--smoke", "--work", str(tmp_path / "work"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Spearman val/test" in result.stdout and "/ default" in result.stdout
    results = json.loads((tmp_path / "work" / "results.json").read_text())
    for name in ("split", "folder"):
        trials = results["searches"][name]["trials"]
        assert len(trials) == 2 and all(0 < trial["test"]["score"] <= 1 for trial in trials)
    assert set(results["full"]) == {"default"}
    assert all(0 < entry["test"]["score"] <= 1 for entry in results["full"].values())
