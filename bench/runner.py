"""``python -m bench [--quick]``: every benchmark, one after another, into one results file.

Each benchmark runs as its own process (as a user runs it: ``python bench/NAME.py``), in
its own work folder under ``--work``, joining one Ray this runner starts for them all (a
benchmark's Ray start-up would otherwise be paid once per benchmark). Its output goes to
``WORK/NAME/output.log``; its figures come from the ``results.json`` it writes, each beside
its baseline from the same run. ``--out`` (``bench/results.md``) is rewritten after every
benchmark, so an interrupted run keeps what it measured. A benchmark that fails gets one
row saying so, with the last line of its output; the others still run, and the exit status
is 1.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from bench.suite import BENCHMARKS, Benchmark, Figure, benchmark_named

REPO = Path(__file__).resolve().parent.parent
VERSIONS = ("torch", "torchaudio", "ray", "mlflow", "numpy", "encodec", "librosa", "onnxruntime")
QUICK_BUDGET_SECONDS = 300


@dataclass
class Outcome:
    """What one benchmark run gave: its figures, or why it has none."""

    benchmark: Benchmark
    seconds: float
    figures: list[Figure] = field(default_factory=list)
    error: str | None = None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"smaller corpora and fewer steps, the same comparisons (under {QUICK_BUDGET_SECONDS // 60} min on 2 cores); "
                        "leaves out " + ", ".join(b.name for b in BENCHMARKS if b.quick is None))
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only this benchmark (repeatable): " + ", ".join(b.name for b in BENCHMARKS))
    parser.add_argument("--work", default=str(REPO / "out" / "bench-all"), help="one folder per benchmark goes here")
    parser.add_argument("--out", default=str(REPO / "bench" / "results.md"), help="the results file (default: bench/results.md)")
    return parser


def chosen_benchmarks(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[Benchmark]:
    try:
        chosen = [benchmark_named(name) for name in args.only] if args.only else list(BENCHMARKS)
    except KeyError as error:
        parser.error(f"--only: no benchmark named {error.args[0]!r}; there are: {', '.join(b.name for b in BENCHMARKS)}")
    if args.quick:
        left_out = [b.name for b in chosen if b.quick is None]
        if args.only and left_out:
            parser.error(f"--only {', '.join(left_out)}: not part of --quick (a full run only)")
        chosen = [b for b in chosen if b.quick is not None]
    return chosen


def run_benchmark(benchmark: Benchmark, *, quick: bool, work: Path, ray_address: str | None) -> Outcome:
    folder = work / benchmark.name.replace(" ", "-")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    command = [sys.executable, str(REPO / "bench" / benchmark.script), *benchmark.arguments(quick=quick, work=str(folder))]
    if benchmark.ray and ray_address:
        command += ["--ray-address", ray_address]
    log = folder / "output.log"
    started = time.perf_counter()
    with log.open("w") as output:
        finished = subprocess.run(command, cwd=REPO, stdout=output, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - started
    if finished.returncode != 0:
        return Outcome(benchmark, seconds, error=f"exit {finished.returncode}: {last_line(log)} (log: {log})")
    try:
        results = json.loads((folder / "results.json").read_text())
        figures = benchmark.figures(results)
    except (OSError, ValueError, KeyError, TypeError, StopIteration) as error:
        return Outcome(benchmark, seconds, error=f"its results could not be read: {type(error).__name__}: {error} (log: {log})")
    return Outcome(benchmark, seconds, figures)


def last_line(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def number(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if magnitude >= 0.01 or value == 0 else f"{value:.2g}"


def describe(machine: dict) -> list[str]:
    versions = ", ".join(f"{name} {version}" for name, version in installed_versions().items())
    return [
        f"- machine: {machine['logical_cores']} logical cores ({machine['physical_cores']} physical), {machine['cpu']}, "
        f"{machine['memory_gb']} GB; load average {machine['load_average_at_start']} at start",
        f"- Python {sys.version.split()[0]}; {versions}",
        f"- code: {git_description()}",
    ]


def installed_versions() -> dict[str, str]:
    found = {}
    for name in VERSIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def git_description() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return f"commit {commit}" + (" with uncommitted changes" if dirty else "")


def render(outcomes: list[Outcome], *, command: str, started_at: datetime, machine: dict, pending: list[Benchmark],
           left_out: list[Benchmark], quick: bool, wall_seconds: float) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"`{command}`, {started_at:%Y-%m-%d %H:%M} UTC: {wall_seconds / 60:.1f} min for {len(outcomes)} benchmark(s), "
        "Ray's start-up included"
        + (f"; {len(pending)} not run yet: {', '.join(b.name for b in pending)}" if pending else "") + ".",
        "",
        *describe(machine),
        "",
        "Every figure is measured against its baseline in the same run; the ratio is figure / baseline, and the aim "
        "(where there is one) is on the ratio."
        + (" This is a `--quick` run: the same comparisons on corpora of seconds to a minute, models trained for a few "
           "epochs and searches of a few trials, so start-up weighs on every speed and the models have barely learnt: "
           "it shows that every benchmark runs and roughly where each ratio lies. The aims are judged in a full run "
           "(`python -m bench`) only." if quick else ""),
        "",
        "| benchmark | figure | value | baseline (same run) | baseline value | unit | ratio | aim |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for outcome in outcomes:
        if outcome.error:
            lines.append(f"| {outcome.benchmark.name} | **failed** after {outcome.seconds:.0f} s: {escape(outcome.error)} | | | | | | |")
            continue
        for figure in outcome.figures:
            lines.append(f"| {outcome.benchmark.name} | {escape(figure.name)} | {number(figure.value)} | {escape(figure.baseline)} | "
                         f"{number(figure.baseline_value)} | {figure.unit} | {number(figure.ratio)} | {aim_cell(figure, quick)} |")
    lines += ["", "| benchmark | what it compares | wall s |", "| --- | --- | --- |"]
    lines += [f"| {o.benchmark.name} | {o.benchmark.what} | {o.seconds:.0f} |" for o in outcomes]
    if left_out:
        lines += ["", "Left out of `--quick`, to keep it under 5 minutes on 2 cores (`python -m bench` runs them): "
                  + ", ".join(b.name for b in left_out) + "."]
    return "\n".join(lines) + "\n"


def aim_cell(figure: Figure, quick: bool) -> str:
    """The aim and whether the figure met it; a quick run shows the aim without a verdict."""
    if not figure.aim:
        return ""
    if quick:
        return f"{figure.aim} (full run)"
    met = figure.aim_met()
    return figure.aim if met is None else f"{figure.aim}: {'met' if met else '**missed**'}"


def escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def start_ray() -> str:
    """A Ray of the runner's own, which every benchmark joins; returns its address."""
    import ray

    from bench.machine import RAY_OPTIONS

    ray.init(**RAY_OPTIONS)
    return ray.get_runtime_context().gcs_address


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    chosen = chosen_benchmarks(args, parser)
    left_out = [b for b in BENCHMARKS if args.quick and b.quick is None and not args.only]
    work, out = Path(args.work).resolve(), Path(args.out).resolve()
    work.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "python -m bench" + (" --quick" if args.quick else "") + "".join(f" --only '{name}'" for name in args.only)

    from bench.machine import describe_machine

    machine = describe_machine()  # before anything runs: the load average tells whether the machine was idle
    started_at, started = datetime.now(timezone.utc), time.perf_counter()
    ray_address = start_ray() if any(b.ray for b in chosen) else None
    outcomes: list[Outcome] = []
    for index, benchmark in enumerate(chosen):
        print(f"[bench] {benchmark.name} ({index + 1}/{len(chosen)}) ...", file=sys.stderr, flush=True)
        outcome = run_benchmark(benchmark, quick=args.quick, work=work, ray_address=ray_address)
        outcomes.append(outcome)
        status = f"failed: {outcome.error}" if outcome.error else f"{len(outcome.figures)} figure(s)"
        print(f"[bench] {benchmark.name}: {outcome.seconds:.0f} s, {status}", file=sys.stderr, flush=True)
        out.write_text(render(outcomes, command=command, started_at=started_at, machine=machine, pending=chosen[index + 1:],
                              left_out=left_out, quick=args.quick, wall_seconds=time.perf_counter() - started))
    print(out.read_text(), end="")
    print(f"[bench] {len(outcomes)} benchmark(s) in {(time.perf_counter() - started) / 60:.1f} min; written to {out}", file=sys.stderr)
    return 1 if any(outcome.error for outcome in outcomes) else 0
