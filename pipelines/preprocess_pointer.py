"""``jingle preprocess pointer``: raw/edit WAV pairs -> log-mel rows with pointers, through Ray Data.

    python -m pipelines.preprocess_pointer --pairs DIR_OR_MANIFEST --out DIR [--config configs/pointer/full.json]

``DIR`` holds ``raw/<name>.wav`` and ``edit/<name>.wav``, and optionally
``pointers/<name>.npy`` or ``edl/<name>.json``; pairs without labels are aligned. The
log-mel and alignment settings are the config's ``features`` and ``alignment`` sections.
Incremental like the fusion preprocessing: a rerun processes only new or changed pairs.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict

from jingle.datasets.pairs import check_pointer_pairs, discover_pointer_pairs
from jingle.datasets.shards import ShardStore
from jingle.pipelines.common import EntryPoint, add_common_arguments, reporting
from jingle.training.pointer_config import PointerTrainConfig
from jingle.pipelines.run_spec import PointerPreprocessSpec
from jingle.pipelines.preprocess_fusion import Summary, add_store_arguments, preprocess_into_store, progress_printer

PROG = "jingle preprocess pointer"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pairs", required=True, help="folder with raw/ and edit/ (and pointers/ or edl/), or a CSV/JSONL manifest")
    parser.add_argument("--out", required=True, help="output folder for shards/, manifest.json, rejects.parquet")
    parser.add_argument("--config", default=None, help="pointer config whose features and alignment sections apply (default: built-in defaults)")
    parser.add_argument("--rows-per-shard", type=int, default=16, help="pairs per Parquet file (default: 16)")
    parser.add_argument("--tasks", type=int, default=None, help="concurrent featurize tasks (default: the cluster's CPUs)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    add_store_arguments(parser)
    add_common_arguments(parser)


def run(spec: PointerPreprocessSpec) -> Summary:
    """Preprocess; raises ``InputError``/``UsageError``/``ConfigError`` for bad input."""
    import ray

    from jingle.datasets.pointer_preprocess import run_pointer_pipeline

    started = time.perf_counter()
    config = PointerTrainConfig.from_file(spec.config) if spec.config else PointerTrainConfig()
    found = discover_pointer_pairs(spec.pairs)  # before Ray: a wrong --pairs costs nothing
    settings = {"features": config.features.to_dict(), "alignment": asdict(config.alignment)}

    def pipeline(store: ShardStore, work: list, pairs: dict):
        return run_pointer_pipeline(
            store=store,
            work=work,
            pairs=pairs,
            features=config.features,
            alignment=asdict(config.alignment),
            rows_per_shard=spec.rows_per_shard,
            featurize_tasks=spec.tasks or max(1, int(ray.cluster_resources().get("CPU", 1))),
            on_progress=progress_printer(spec.quiet),
        )

    return preprocess_into_store(
        spec, kind="pointer", settings=settings, found=found, check=check_pointer_pairs,
        pipeline=pipeline, first_role="raw", started=started,
    )


ENTRY_POINT = EntryPoint(PROG, __doc__, add_arguments, reporting(lambda args: run(PointerPreprocessSpec.from_args(args))))
spec = PointerPreprocessSpec  # keyword arguments -> the spec of a run
build_parser, main = ENTRY_POINT.build_parser, ENTRY_POINT.main


if __name__ == "__main__":
    sys.exit(main())
