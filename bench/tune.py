"""Search cost: ASHA against the same search without early stopping, and a trial's fixed costs.

    python bench/tune.py [--samples 12] [--max-epochs 9] [--reduction-factor R] [--space tune_spaces/fusion_loss_weights.yaml]
        [--train-pairs 12] [--seconds 12] [--segment-seconds 4] [--work DIR] [--smoke] [--ray-address ADDR]

One generated corpus (drums → chords, mel codec, ``--segment-seconds`` segments) and the
demo-size model (``configs/demo.json``'s model with ``configs/fusion.json``'s losses). The
real ``jingle tune fusion`` runs twice on the same space, sample count and seed (so the
same configurations are drawn in the same order): with ASHA (grace period 1, reduction
factor ``--reduction-factor``, by default ``jingle tune``'s) and with no early stopping (every trial to ``--max-epochs``). Printed for each:
trial-epochs, wall time and the best ``val_score``; then the ratios (the aim: ASHA spends
at most a third of the trial-epochs and its best is within 5% of the full search's), and a
trial's fixed costs from the full search's results: its start-up (from the trial's start
to its first step: the Tune actor, imports, the model, the codec and the rows) and its
per-epoch overhead (validation with the arrangement score, report and checkpoint).
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a file: make the project importable
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from bench.fusion_quality import build_config
from bench.machine import add_ray_address_argument, describe_machine, start_ray
from jingle.datasets.synth import CorpusSpec, write_fusion_corpus
from jingle.pipelines import preprocess_fusion, tune_fusion

ROOT = Path(__file__).resolve().parent.parent


def search(args: argparse.Namespace, work: Path, shards: Path, config: Path, *, early_stopping: str):
    name = f"search-{early_stopping}"
    shutil.rmtree(work / "runs" / name, ignore_errors=True)
    spec = tune_fusion.spec(data=str(shards), space=args.space, config=str(config), samples=args.samples, max_epochs=args.max_epochs,
                            grace_period=1, reduction_factor=args.reduction_factor, seed=0, early_stopping=early_stopping,
                            storage=work / "runs", name=name)
    started = time.perf_counter()
    summary = tune_fusion.run(spec)
    return summary, time.perf_counter() - started


def fixed_costs(search_dir: Path) -> dict[str, float]:
    """Median over trials: start-up (Tune's time at the first report less the first
    epoch's own time, plus the worker's set-up inside it) and per-epoch time outside steps."""
    startups, overheads, epochs = [], [], []
    for path in search_dir.glob("run_trial_*/result.json"):
        results = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        results = [result for result in results if "epoch_seconds" in result]
        if not results:
            continue
        first = results[0]
        startups.append(first["time_total_s"] - first["epoch_seconds"] + first.get("setup_seconds", 0.0))
        overheads += [result["overhead_seconds"] for result in results]
        epochs += [result["epoch_seconds"] for result in results]
    return {
        "trial_startup_seconds": float(np.median(startups)),
        "epoch_overhead_seconds": float(np.median(overheads)),
        "epoch_seconds": float(np.median(epochs)),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--samples", type=int, default=12)
    parser.add_argument("--max-epochs", type=int, default=9)
    parser.add_argument("--reduction-factor", type=float, default=None, help="ASHA's (default: jingle tune's)")
    parser.add_argument("--space", default=str(ROOT / "tune_spaces" / "fusion_loss_weights.yaml"))
    parser.add_argument("--train-pairs", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--segment-seconds", type=float, default=4.0)
    parser.add_argument("--work", default="out/bench-tune")
    parser.add_argument("--smoke", action="store_true", help="3 samples of 2 epochs on a tiny corpus: checks that it runs")
    add_ray_address_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.reduction_factor is None:
        args.reduction_factor = tune_fusion.build_parser().get_default("reduction_factor")
    if args.smoke:
        args.samples, args.max_epochs, args.train_pairs, args.seconds, args.segment_seconds = 3, 2, 5, 3.0, 1.5
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(describe_machine())
    corpus, shards = work / "corpus", work / "shards"
    for folder in (corpus, shards):
        shutil.rmtree(folder, ignore_errors=True)
    write_fusion_corpus(corpus, CorpusSpec(pairs=args.train_pairs, min_seconds=args.seconds, max_seconds=args.seconds))
    start_ray(args.ray_address)
    preprocess_fusion.run(preprocess_fusion.spec(pairs=str(corpus), out=shards, codec="mel", segment_seconds=args.segment_seconds, quiet=True))
    config = build_config(work)
    full, full_seconds = search(args, work, shards, config, early_stopping="none")
    asha, asha_seconds = search(args, work, shards, config, early_stopping="asha")
    costs = fixed_costs(Path(full.search_dir))
    print(f"\n{args.samples} samples of up to {args.max_epochs} epochs, space {Path(args.space).name}, seed 0")
    print(f"{'search':<22}{'trial-epochs':>14}{'wall s':>10}{'best val_score':>16}{'stopped early':>15}")
    for label, summary, seconds in (("no early stopping", full, full_seconds), ("ASHA", asha, asha_seconds)):
        print(f"{label:<22}{summary.trial_epochs:>14}{seconds:>10.0f}{summary.best_value:>16.4f}{summary.stopped_early:>15}")
    epoch_ratio = asha.trial_epochs / full.trial_epochs
    best_ratio = asha.best_value / full.best_value
    print(f"ASHA / full: trial-epochs {epoch_ratio:.2f} (aim <= 0.33), wall time {asha_seconds / full_seconds:.2f}, "
          f"best val_score {best_ratio:.3f} (aim >= 0.95)")
    print(f"a trial's fixed costs (median): start-up {costs['trial_startup_seconds']:.1f} s, per epoch "
          f"{costs['epoch_overhead_seconds']:.2f} s outside steps of {costs['epoch_seconds']:.2f} s")
    results = {"samples": args.samples, "max_epochs": args.max_epochs, "space": args.space,
               "full": {"trial_epochs": full.trial_epochs, "seconds": full_seconds, "best": full.best_value},
               "asha": {"trial_epochs": asha.trial_epochs, "seconds": asha_seconds, "best": asha.best_value,
                        "stopped_early": asha.stopped_early},
               "ratios": {"trial_epochs": epoch_ratio, "best": best_ratio}, "fixed_costs": costs}
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
