"""What a training run spends outside its training steps, on the demo's shards.

    python bench/overhead.py [--out DIR] [--workers 2] [--models fusion,pointer] [--smoke]

Generates the demo's corpora (``jingle demo``'s sizes and seeds), preprocesses them, and
trains each model twice with the real ``jingle train`` (``pipelines/train.py``), 2 workers,
the demo's configs (the pointer network's with 3 epochs of 2 passes: see ``SAME_WORK``):

- **streamed** (the baseline): ``--override training.max_in_memory_mb=0``, every epoch reads
  the rows again through Ray Data, as every training did before the workers kept small
  data in memory;
- **in memory**: the default: each worker reads its rows once with pyarrow.

For each run it prints the whole command's seconds (Ray start-up, data, validation and
checkpoints included), the seconds in training steps (rank 0), and the per-epoch seconds
outside training steps (``overhead_seconds``, from the run's MLflow metrics), with the
ratios of the baseline to the in-memory run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.machine import add_ray_address_argument, describe_machine, start_ray  # noqa: E402
from jingle.datasets.edits import make_conform_pair, write_pointer_corpus  # noqa: E402
from jingle.datasets.synth import CorpusSpec, write_fusion_corpus  # noqa: E402
from jingle.pipelines import preprocess_fusion, preprocess_pointer, train_fusion, train_pointer  # noqa: E402
from jingle.pipelines.demo import SEGMENT_SECONDS  # noqa: E402
from jingle.training.pointer_config import PointerTrainConfig  # noqa: E402

CONFIGS = {"fusion": REPO_ROOT / "configs" / "demo.json", "pointer": REPO_ROOT / "configs" / "pointer" / "demo.json"}
# Streamed, every pass over the pointer rows is a Ray Data read: the baseline runs the
# demo's pointer config with the epochs and passes it had before (3 epochs of 2 passes),
# and so does the in-memory run, so that the two compare like with like.
SAME_WORK = {"fusion": {}, "pointer": {"training.epochs": 3, "data.repeats_per_epoch": 2}}
MODES = {"streamed": {"training.max_in_memory_mb": 0}, "in memory": {}}


def fusion_shards(out: Path, pairs: int, seconds: float) -> Path:
    corpus, shards = out / "fusion-corpus", out / "fusion-shards"
    write_fusion_corpus(corpus, CorpusSpec(pairs=pairs, min_seconds=seconds, max_seconds=2 * seconds, seed=0), arrangements=True)
    preprocess_fusion.run(preprocess_fusion.spec(pairs=str(corpus), out=shards, codec="mel", rows_per_shard=16,
                                                 segment_seconds=SEGMENT_SECONDS, quiet=True))
    return shards


def pointer_shards(out: Path, pairs: int, seconds: float) -> Path:
    features = PointerTrainConfig.from_file(CONFIGS["pointer"]).features
    corpus, shards = out / "pointer-corpus", out / "pointer-shards"
    made = [make_conform_pair(index, seconds=seconds, features=features, processed=index % 2 == 1) for index in range(pairs)]
    write_pointer_corpus(corpus, made, features, labels="pointers")
    preprocess_pointer.run(preprocess_pointer.spec(pairs=str(corpus), out=shards, config=str(CONFIGS["pointer"]), quiet=True))
    return shards


def epoch_overheads(summary) -> list[float]:
    """Per-epoch seconds outside training steps, from the run's MLflow metrics (rank 0)."""
    from mlflow.tracking import MlflowClient

    history = MlflowClient(summary.tracking_uri).get_metric_history(summary.run_id, "overhead_seconds")
    return [metric.value for metric in sorted(history, key=lambda metric: metric.step)]


def train(model: str, shards: Path, storage: Path, workers: int, overrides: dict) -> dict:
    module = train_fusion if model == "fusion" else train_pointer
    spec = module.spec(data=str(shards), config=str(CONFIGS[model]), workers=workers, storage=storage, name="bench", overrides=overrides)
    started = time.perf_counter()
    summary = module.run(spec)
    seconds = time.perf_counter() - started
    overheads = epoch_overheads(summary)
    return {
        "run_seconds": seconds,
        "step_seconds": summary.metrics.get("run_step_seconds", 0.0),
        "epochs": summary.epoch,
        "steps": summary.step,
        "epoch_overhead_seconds": overheads,
        "mean_epoch_overhead_seconds": sum(overheads) / len(overheads) if overheads else None,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--models", default="fusion,pointer")
    parser.add_argument("--smoke", action="store_true", help="tiny corpora, one epoch (the test suite's run; no figures)")
    parser.add_argument("--json", default=None, help="also write the results here")
    add_ray_address_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    machine = describe_machine()
    start_ray(args.ray_address)
    out = Path(args.out or tempfile.mkdtemp(prefix="jingle-bench-overhead-"))
    pairs, fusion_seconds, pointer_seconds = (8, 16.0, 4.0) if args.smoke else (8, 20.0, 16.0)
    results: dict[str, dict[str, dict]] = {}
    smoke = {"training.epochs": 1} if args.smoke else {}
    for model in [name.strip() for name in args.models.split(",") if name.strip()]:
        if model == "fusion":
            shards = fusion_shards(out / model, pairs, fusion_seconds)
        else:
            shards = pointer_shards(out / model, pairs, pointer_seconds)
        results[model] = {mode: train(model, shards, out / model / f"runs-{index}", args.workers, {**SAME_WORK[model], **smoke, **extra})
                          for index, (mode, extra) in enumerate(MODES.items())}
    print(f"machine: {machine['logical_cores']} cores, {machine['cpu']}, load {machine['load_average_at_start']} at start")
    print(f"{'model':8} {'data':10} {'run s':>7} {'in steps s':>10} {'steps share':>11} {'epoch overheads s':>24}")
    for model, modes in results.items():
        for mode, result in modes.items():
            overheads = ", ".join(f"{value:.2f}" for value in result["epoch_overhead_seconds"])
            print(f"{model:8} {mode:10} {result['run_seconds']:7.1f} {result['step_seconds']:10.1f} "
                  f"{result['step_seconds'] / result['run_seconds']:11.0%} {overheads:>24}")
        base, new = modes["streamed"], modes["in memory"]
        if new["mean_epoch_overhead_seconds"]:
            print(f"  {model}: per-epoch overhead {base['mean_epoch_overhead_seconds']:.2f} s streamed -> "
                  f"{new['mean_epoch_overhead_seconds']:.2f} s in memory ({base['mean_epoch_overhead_seconds'] / new['mean_epoch_overhead_seconds']:.0f}x less); "
                  f"whole run {base['run_seconds']:.1f} s -> {new['run_seconds']:.1f} s ({new['run_seconds'] / base['run_seconds']:.2f} of the baseline)")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
