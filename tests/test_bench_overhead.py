"""The overhead benchmark runs (the pointer model, one epoch, on a tiny corpus; the figures come from
full runs): both data modes train, and the in-memory epochs spend less outside their steps."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_benchmark

pytestmark = [pytest.mark.ray, pytest.mark.bench]  # not in the default run: `pytest -m bench`


def test_overhead_benchmark_smoke(ray_address, tmp_path):
    result = run_benchmark("overhead.py", ray_address, "--smoke", "--models", "pointer", "--out", str(tmp_path / "work"),
                           "--json", str(tmp_path / "results.json"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "per-epoch overhead" in result.stdout
    runs = json.loads((tmp_path / "results.json").read_text())["results"]["pointer"]
    streamed, in_memory = runs["streamed"], runs["in memory"]
    assert streamed["epochs"] == in_memory["epochs"] == 1 and streamed["steps"] == in_memory["steps"] > 0
    assert len(in_memory["epoch_overhead_seconds"]) == 1
    # a Ray Data read per pass costs seconds even on a tiny corpus; rows in memory do not
    assert in_memory["mean_epoch_overhead_seconds"] < streamed["mean_epoch_overhead_seconds"]
