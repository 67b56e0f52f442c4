"""Scheduled preprocessing: how long a run that finds nothing new takes on a large folder.

    python bench/schedule.py [--pairs 1000] [--seconds 1.0] [--work DIR] [--smoke]

A schedule (cron, a systemd timer) runs ``python -m pipelines.preprocess_fusion`` every
hour over a folder of WAV pairs; most firings find nothing new. On a generated folder of
``--pairs`` pairs, each command is timed as the schedule runs it, a fresh process from
start to exit (imports, and Ray only when there is work):

- **first run**: every pair preprocessed (mel codec, one segment per pair);
- **nothing to do**: the same command again, which must answer "nothing to do";
- **floor**: ``--help`` of the same module: the interpreter and the command's imports,
  what no run can go below.

It also times a second run of ``--if-busy exit`` while another process holds the folder's
lock (the answer a scheduler gets when the last firing is still running).

Printed and written to ``WORK/results.json``. ``--smoke``: 20 pairs.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a file: make the project importable
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.machine import add_ray_address_argument, describe_machine
from jingle.datasets.synth import CorpusSpec, write_fusion_corpus

ROOT = Path(__file__).resolve().parent.parent


def timed(command: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=3600)
    return time.perf_counter() - started, result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--work", default="out/bench-schedule")
    parser.add_argument("--smoke", action="store_true", help="20 pairs: checks that it runs")
    add_ray_address_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.smoke:
        args.pairs = 20
    work = Path(args.work).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    print(describe_machine())
    pairs, out = work / "pairs", work / "shards"
    write_fusion_corpus(pairs, CorpusSpec(pairs=args.pairs, min_seconds=args.seconds, max_seconds=args.seconds, seed=3))
    env = {**os.environ, **({"RAY_ADDRESS": args.ray_address} if args.ray_address else {})}
    command = [sys.executable, "-m", "pipelines.preprocess_fusion", "--pairs", str(pairs), "--out", str(out),
               "--segment-seconds", repr(args.seconds), "--quiet"]

    first_seconds, first = timed(command, env)
    if first.returncode != 0:
        print(first.stderr[-3000:], file=sys.stderr)
        return 1
    idle_seconds, idle = timed(command, env)
    if idle.returncode != 0 or not idle.stdout.startswith("nothing to do"):
        print(idle.stdout[-2000:], idle.stderr[-2000:], file=sys.stderr)
        return 1
    floor_seconds, _ = timed([sys.executable, "-m", "pipelines.preprocess_fusion", "--help"], env)

    from jingle.datasets.shards import ShardStore

    manifest = json.loads((out / "manifest.json").read_text())
    with ShardStore(out, kind="fusion", settings=manifest["settings"]):  # a run still going
        busy_seconds, busy = timed(command + ["--if-busy", "exit"], env)
    if busy.returncode != 75:
        print(busy.stderr[-2000:], file=sys.stderr)
        return 1

    print(f"\n{args.pairs} pairs of {args.seconds:g} s, mel codec; each command a fresh process, as a schedule runs it")
    print(f"{'run':<36}{'seconds':>10}")
    for label, seconds in (("first run (every pair)", first_seconds), ("nothing to do", idle_seconds),
                           ("--help (interpreter and imports)", floor_seconds), ("busy: another run holds the lock", busy_seconds)):
        print(f"{label:<36}{seconds:>10.2f}")
    print(f"nothing to do / first run: {idle_seconds / first_seconds:.3f}; nothing to do beyond the imports: "
          f"{idle_seconds - floor_seconds:.2f} s")
    print(f"answer: {idle.stdout.strip().splitlines()[0]}")
    print(f"busy:   {busy.stderr.strip()}")
    results = {"pairs": args.pairs, "seconds": args.seconds, "first_run_s": first_seconds, "nothing_to_do_s": idle_seconds,
               "help_s": floor_seconds, "busy_s": busy_seconds, "ratio": idle_seconds / first_seconds}
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
