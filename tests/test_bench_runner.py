"""``python -m bench``: every benchmark into one results file, a failure as one row."""

from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path

import pytest

from bench.runner import Outcome, render, run_benchmark
from bench.suite import BENCHMARKS, WORK, Benchmark, Figure, at_least, at_most

REPO = Path(__file__).resolve().parent.parent
MACHINE = {"logical_cores": 2, "physical_cores": 2, "cpu": "test CPU", "memory_gb": 24, "load_average_at_start": 0.1}


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "fake_bench.py"
    path.write_text("import json, sys, pathlib\nwork = pathlib.Path(sys.argv[sys.argv.index('--work') + 1])\n" + textwrap.dedent(body))
    return str(path)


def speed_figures(results: dict) -> list[Figure]:
    return [Figure("pipeline speed", results["fast"], "plain loop", results["slow"], "audio s/s", at_least(1.0))]


def test_a_figure_is_read_from_results_json_and_set_against_its_baseline(tmp_path):
    fake = Benchmark("fake", script(tmp_path, "(work / 'results.json').write_text(json.dumps({'fast': 6.0, 'slow': 4.0}))\n"),
                     "a fake", full=("--work", WORK), quick=("--work", WORK), figures=speed_figures, ray=False)
    outcome = run_benchmark(fake, quick=True, work=tmp_path / "work", ray_address=None)
    assert outcome.error is None
    [figure] = outcome.figures
    assert (figure.value, figure.baseline_value, figure.ratio, figure.aim_met()) == (6.0, 4.0, 1.5, True)
    table = render([outcome], command="python -m bench", started_at=datetime.now(timezone.utc), machine=MACHINE,
                   pending=[], left_out=[], quick=False, wall_seconds=10.0)
    assert "| fake | pipeline speed | 6 | plain loop | 4 | audio s/s | 1.5 | >= 1.0: met |" in table
    quick = render([outcome], command="python -m bench --quick", started_at=datetime.now(timezone.utc), machine=MACHINE,
                   pending=[], left_out=[], quick=True, wall_seconds=10.0)
    assert "| 1.5 | >= 1.0 (full run) |" in quick  # a quick run's figures are not judged against the aims


def test_a_failing_benchmark_is_one_row_with_its_last_line_and_an_aim_missed_is_marked(tmp_path):
    failing = Benchmark("broken", script(tmp_path, "print('warming up'); sys.exit('shards: pair 7 is truncated')\n"), "fails",
                        full=("--work", WORK), quick=None, figures=speed_figures, ray=False)
    outcome = run_benchmark(failing, quick=False, work=tmp_path / "work", ray_address=None)
    assert outcome.figures == [] and outcome.error.startswith("exit 1: shards: pair 7 is truncated")
    slow = Outcome(failing, 3.0, [Figure("pipeline speed", 3.0, "plain loop", 4.0, "audio s/s", at_least(1.0))])
    table = render([outcome, slow], command="python -m bench", started_at=datetime.now(timezone.utc), machine=MACHINE,
                   pending=[], left_out=[], quick=False, wall_seconds=10.0)
    assert "| broken | **failed** after" in table and "pair 7 is truncated" in table
    assert "| 0.75 | >= 1.0: **missed** |" in table


def test_results_without_the_expected_figures_are_a_failure_not_a_crash(tmp_path):
    fake = Benchmark("fake", script(tmp_path, "(work / 'results.json').write_text(json.dumps({'fast': 6.0}))\n"), "a fake",
                     full=("--work", WORK), quick=None, figures=speed_figures, ray=False)
    outcome = run_benchmark(fake, quick=False, work=tmp_path / "work", ray_address=None)
    assert outcome.error.startswith("its results could not be read: KeyError")


def test_a_zero_baseline_has_no_ratio_and_no_verdict():
    figure = Figure("x", 1.0, "y", 0.0, aim=at_least(1.0))
    assert math.isnan(figure.ratio) and figure.aim_met() is None


def test_an_aim_at_most_is_met_below_its_bound_only():
    """ASHA's trial-epochs against a full search: lower is better."""
    assert Figure("trial-epochs", 4.0, "full", 12.0, aim=at_most(0.33)).aim_met() is False
    assert Figure("trial-epochs", 3.0, "full", 12.0, aim=at_most(0.33)).aim_met() is True
    assert str(at_most(0.33)) == "<= 0.33"


@pytest.mark.parametrize("benchmark", BENCHMARKS, ids=lambda benchmark: benchmark.name)
def test_every_benchmark_parses_the_arguments_the_runner_gives_it(benchmark):
    """A renamed or removed flag fails here, not an hour into a full run."""
    module = importlib.import_module(f"bench.{benchmark.script[:-3]}")
    for quick in (False, True) if benchmark.quick is not None else (False,):
        arguments = benchmark.arguments(quick=quick, work="/tmp/bench-work")
        arguments += ["--ray-address", "127.0.0.1:6379"] if benchmark.ray else []
        assert not any(WORK in argument for argument in arguments)
        parsed = module.build_parser().parse_args(arguments)
        assert "/tmp/bench-work" in {str(value) for value in vars(parsed).values()}  # its work folder is the runner's


def test_an_unknown_benchmark_is_refused_in_one_line():
    finished = subprocess.run([sys.executable, "-m", "bench", "--only", "nonesuch"], cwd=REPO, capture_output=True, text=True,
                              timeout=120)
    assert finished.returncode == 2
    assert "--only: no benchmark named 'nonesuch'; there are: preprocess, train" in finished.stderr


@pytest.mark.ray
@pytest.mark.bench
def test_the_quick_run_measures_every_figure(tmp_path):
    out = tmp_path / "results.md"
    finished = subprocess.run([sys.executable, "-m", "bench", "--quick", "--work", str(tmp_path / "work"), "--out", str(out)],
                              cwd=REPO, capture_output=True, text=True, timeout=900)
    assert finished.returncode == 0, finished.stderr[-3000:]
    table = out.read_text()
    assert "**failed**" not in table
    for benchmark in BENCHMARKS:
        if benchmark.quick is not None:
            assert f"| {benchmark.name} |" in table, benchmark.name
    results = json.loads((tmp_path / "work" / "preprocess" / "results.json").read_text())
    encodec = results["codecs"]["encodec_24khz"]  # the pipeline wrote what the plain loop wrote
    assert encodec["pipeline"]["segments"] == encodec["loop"]["segments"] > 0 and encodec["max_latent_difference"] < 1e-4
