"""``jingle preprocess pointer``: raw/edit WAV pairs -> log-mel rows with pointers, through Ray Data.

    python -m pipelines.preprocess_pointer --pairs DIR_OR_MANIFEST --out DIR [--config configs/pointer/full.json]

``DIR`` holds ``raw/<name>.wav`` and ``edit/<name>.wav``, and optionally
``pointers/<name>.npy`` or ``edl/<name>.json``; pairs without labels are aligned. The
log-mel and alignment settings are the config's ``features`` and ``alignment`` sections.
Incremental like the fusion preprocessing: a rerun processes only new or changed pairs.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a file (ray submit): make the project importable
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import argparse
import sys
import time
from dataclasses import asdict

from datasets.pairs import check_pointer_pairs, discover_pointer_pairs
from datasets.shards import ShardStore
from pipelines.common import EntryPoint, UsageError, add_common_arguments, init_ray
from pipelines.pointer_config import PointerTrainConfig
from pipelines.preprocess_fusion import Summary

PROG = "jingle preprocess pointer"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pairs", required=True, help="folder with raw/ and edit/ (and pointers/ or edl/), or a CSV/JSONL manifest")
    parser.add_argument("--out", required=True, help="output folder for shards/, manifest.json, rejects.parquet")
    parser.add_argument("--config", default=None, help="pointer config whose features and alignment sections apply (default: built-in defaults)")
    parser.add_argument("--rows-per-shard", type=int, default=16, help="pairs per Parquet file (default: 16)")
    parser.add_argument("--tasks", type=int, default=None, help="concurrent featurize tasks (default: the cluster's CPUs)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> Summary:
    """Preprocess; raises ``InputError``/``UsageError``/``ConfigError`` for bad input."""
    import ray

    from datasets.pointer_preprocess import run_pointer_pipeline

    started = time.perf_counter()
    if args.rows_per_shard < 1:
        raise UsageError(f"--rows-per-shard must be at least 1, got {args.rows_per_shard}")
    config = PointerTrainConfig.from_file(args.config) if args.config else PointerTrainConfig()
    found = discover_pointer_pairs(args.pairs)  # before Ray: a wrong --pairs costs nothing
    settings = {"features": config.features.to_dict(), "alignment": asdict(config.alignment)}
    summary = Summary(out_dir=str(args.out), pairs_found=len(found.pairs))
    with ShardStore(args.out, kind="pointer", settings=settings) as store:
        checked, probe_rejects = check_pointer_pairs(found.pairs)
        pairs = {c.pair.pair_id: c.pair for c in checked}
        work = store.plan({c.pair.pair_id: c.fingerprint for c in checked})
        summary.pairs_already_done = sum(1 for c in checked if store.items.get(c.pair.pair_id) and store.items[c.pair.pair_id].complete())
        summary.removed_orphans, summary.invalidated_files = store.removed_orphans, store.invalidated_files
        progress = None
        if work:
            init_ray(args.num_cpus)
            tasks = args.tasks or max(1, int(ray.cluster_resources().get("CPU", 1)))
            progress = run_pointer_pipeline(
                store=store,
                work=work,
                pairs=pairs,
                features=config.features,
                alignment=asdict(config.alignment),
                rows_per_shard=args.rows_per_shard,
                featurize_tasks=tasks,
                on_progress=(lambda p: None) if args.quiet else (lambda p: print(p.line(), file=sys.stderr, flush=True)),
            )
        rejects = store.all_rejects(found.rejects + probe_rejects, present={c.pair.pair_id for c in checked})
        summary.changed = store.finish(rejects) or bool(work)
        summary.rejects = rejects
        summary.total_rows = sum(entry["rows"] for entry in store.files.values())
        summary.total_files = len(store.files)
    summary.pairs_processed = len(work)
    if progress is not None:
        summary.segments_written = progress.rows
        summary.shards_written = progress.shards
        summary.audio_seconds = progress.audio_seconds
        summary.new_rejects = len(progress.decode_rejects)
        summary.files_read = 2 * len(work) - sum(r.reason.startswith("raw:") for r in progress.decode_rejects)
    summary.wall_seconds = time.perf_counter() - started
    return summary


def command(args: argparse.Namespace) -> int:
    print(run(args).report())
    return 0


ENTRY_POINT = EntryPoint(PROG, __doc__, add_arguments, command)
build_parser, main = ENTRY_POINT.build_parser, ENTRY_POINT.main


if __name__ == "__main__":
    sys.exit(main())
