"""The pointer benchmark runs (a few short pairs, one epoch; the figures come from full runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.ray, pytest.mark.bench]  # not in the default run: `pytest -m bench`


def test_pointer_benchmark_smoke(ray_address, tmp_path):
    # The edit half trains a second model: left out here to keep the suite short; the
    # pipeline tests train and run an edit-mode model.
    result = subprocess.run(
        [sys.executable, "bench/pointer.py", "--smoke", "--skip", "edit", "--work", str(tmp_path), "--ray-address", ray_address],
        cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ}, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "alignment, clean held-out pairs" in result.stdout and "aim >= 0.95" in result.stdout
    assert "network" in result.stdout and "vs alignment" in result.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["alignment"]["within_2"] > 0.9
    assert set(results["conform"]["by_strength"]) == {"1.0", "6.0"}
