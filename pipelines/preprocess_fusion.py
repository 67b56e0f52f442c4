"""``jingle preprocess fusion``: WAV pairs -> sharded Parquet latents, through Ray Data.

    python -m pipelines.preprocess_fusion --pairs DIR_OR_MANIFEST --out DIR [--codec mel]
    ray submit cluster.yaml pipelines/preprocess_fusion.py --pairs ... --out ...

Incremental: a rerun processes only pairs (or segments) not yet in ``OUT/manifest.json``,
so the same command can run on a schedule over a growing folder.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from jingle.datasets.pairs import Discovery, Reject, check_pairs, discover_fusion_pairs
from jingle.core.storage import check_writable
from jingle.datasets.shards import LATENT_DTYPES, REJECTS, ShardStore
from jingle.models.codecs import CODEC_NAMES, build_codec
from jingle.pipelines.common import (
    EntryPoint,
    add_codec_checkpoint_argument,
    add_common_arguments,
    human_seconds,
    init_ray,
    reporting,
)

from jingle.pipelines.run_spec import FusionPreprocessSpec, PointerPreprocessSpec

if TYPE_CHECKING:  # Ray Data is imported when a run has work, not at start-up
    from jingle.datasets.shard_stream import Progress

PROG = "jingle preprocess fusion"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pairs", required=True, help="folder with input/ and target/, or a CSV/JSONL manifest")
    parser.add_argument("--out", required=True, help="output folder for shards/, manifest.json, rejects.parquet")
    parser.add_argument("--codec", choices=CODEC_NAMES, default="mel", help="latent codec (default: mel)")
    add_codec_checkpoint_argument(parser)
    parser.add_argument("--segment-seconds", type=float, default=16.0, help="window length (default: 16)")
    parser.add_argument("--hop-seconds", type=float, default=None, help="distance between windows (default: segment)")
    parser.add_argument(
        "--tail",
        choices=("drop", "pad"),
        default="drop",
        help="audio after the last full window: drop it, or pad a last window with zeros (default: drop)",
    )
    parser.add_argument("--min-tail-seconds", type=float, default=None, help="shortest tail --tail pad keeps (default: half a segment)")
    parser.add_argument("--latent-dtype", choices=LATENT_DTYPES, default="float32", help="stored latent precision")
    parser.add_argument("--rows-per-shard", type=int, default=64, help="segments per Parquet file (default: 64)")
    parser.add_argument("--encoder-actors", type=int, default=None, help="encoder actor pool size (default: 1 per GPU, or CPUs/4)")
    parser.add_argument("--encoder-threads", type=int, default=None, help="torch threads per CPU encoder actor")
    parser.add_argument("--encode-batch", type=int, default=None, help="segments per encoder call")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    add_store_arguments(parser)
    add_common_arguments(parser)


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    """The output folder's lock (what a run does when another run holds it) and the check of
    its shards against the manifest."""
    parser.add_argument("--if-busy", choices=("exit", "wait"), default="exit",
                        help="when another run is writing --out: exit at once with status 75, or wait for it (default: exit)")
    parser.add_argument("--verify", action="store_true",
                        help="also check every shard's sha256 against the manifest (existence and size are always checked); "
                             "a damaged shard's rows are made again")


@dataclass
class Summary:
    """What a preprocessing run did; printed at the end and returned to callers."""

    out_dir: str
    pairs_found: int = 0
    pairs_processed: int = 0
    pairs_already_done: int = 0
    files_read: int = 0
    rejects: list[Reject] = field(default_factory=list)
    new_rejects: int = 0
    segments_written: int = 0
    shards_written: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    total_rows: int = 0
    total_files: int = 0
    removed_orphans: int = 0
    invalidated_files: int = 0
    damaged_files: list[tuple[str, str]] = field(default_factory=list)  # (shard, problem): dropped and made again
    changed: bool = False
    took_over: dict | None = None  # the lock of a run that did not finish (host, pid, started)

    @property
    def audio_seconds_per_second(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds else 0.0

    def report(self) -> str:
        lines = []
        if not self.changed and self.segments_written == 0 and self.pairs_processed == 0:
            lines.append(
                f"nothing to do: {self.pairs_already_done} pairs already in {self.out_dir} "
                f"({self.total_rows} segments in {self.total_files} shards)"
            )
        else:
            lines.append(f"preprocessed {self.pairs_processed} pairs into {self.out_dir}")
        lines += [
            f"  pairs found        {self.pairs_found} ({self.pairs_processed} processed now, {self.pairs_already_done} already done)",
            f"  files read         {self.files_read}",
            f"  files rejected     {len(self.rejects)} ({self.new_rejects} new)",
        ]
        for reject in self.rejects[:20]:
            lines.append(f"    {reject.path}: {reject.reason}")
        if len(self.rejects) > 20:
            lines.append(f"    ... and {len(self.rejects) - 20} more in {self.out_dir.rstrip('/')}/{REJECTS}")
        lines += [
            f"  segments written   {self.segments_written} in {self.shards_written} shards "
            f"({self.total_rows} segments in {self.total_files} shards in all)",
            f"  audio              {self.audio_seconds / 3600:.3f} h of pairs ({human_seconds(self.audio_seconds)})",
            f"  wall time          {human_seconds(self.wall_seconds)}",
            f"  throughput         {self.audio_seconds_per_second:.1f} audio-seconds per second",
        ]
        if self.took_over:
            lines.append(f"  lock               taken over from a run that did not finish (pid {self.took_over.get('pid')} "
                         f"on {self.took_over.get('host')})")
        if self.removed_orphans or self.invalidated_files:
            lines.append(
                f"  recovered          removed {self.removed_orphans} unfinished shards of an interrupted run, "
                f"{self.invalidated_files} shards of changed pairs"
            )
        for name, problem in self.damaged_files[:20]:
            lines.append(f"  damaged shard      {name} {problem}: its rows were made again")
        if len(self.damaged_files) > 20:
            lines.append(f"  damaged shards     ... and {len(self.damaged_files) - 20} more, made again")
        return "\n".join(lines)


def run(spec: FusionPreprocessSpec) -> Summary:
    """Preprocess; raises ``InputError``/``UsageError``/``CodecUnavailable`` for bad input."""
    from jingle.datasets.fusion_preprocess import Resources, run_fusion_pipeline

    started = time.perf_counter()
    segmenting = spec.segmenting
    found = discover_fusion_pairs(spec.pairs)  # before Ray: a wrong --pairs costs nothing
    codec = build_codec(spec.codec, checkpoint=spec.codec_checkpoint)
    settings = {
        "codec": codec.describe(),
        "segmenting": segmenting.to_dict(),
        "latent_dtype": spec.latent_dtype,
    }
    # Pairs with reference arrangements (arrangement/ or a manifest column) make shards with
    # two more columns; the key is written only then, so folders made before it still match.
    arrangements = any(pair.arrangement_path for pair in found.pairs)
    if arrangements:
        settings["arrangements"] = True

    def pipeline(store: ShardStore, work: list, pairs: dict):
        resources = Resources.for_cluster(actors=spec.encoder_actors, threads=spec.encoder_threads, encode_batch=spec.encode_batch)
        return run_fusion_pipeline(
            store=store,
            work=work,
            pairs=pairs,
            codec_name=spec.codec,
            codec=codec,
            segmenting=segmenting,
            latent_dtype=spec.latent_dtype,
            rows_per_shard=spec.rows_per_shard,
            resources=resources,
            on_progress=progress_printer(spec.quiet),
            arrangements=arrangements,
        )

    return preprocess_into_store(
        spec, kind="fusion", settings=settings, found=found, check=lambda pairs: check_pairs(pairs, segmenting),
        pipeline=pipeline, first_role="input", started=started,
    )


def progress_printer(quiet: bool) -> Callable[[Progress], None]:
    return (lambda progress: None) if quiet else (lambda progress: print(progress.line(), file=sys.stderr, flush=True))


def preprocess_into_store(
    spec: FusionPreprocessSpec | PointerPreprocessSpec,
    *,
    kind: str,
    settings: dict,
    found: Discovery,
    check: Callable[[list], tuple[list, list[Reject]]],
    pipeline: Callable[[ShardStore, list, dict], Progress],
    first_role: str,
    started: float,
) -> Summary:
    """What every preprocessing run does around its Ray Data pipeline (fusion and pointer).

    Opens the output folder's shard store (refusing other settings), reads the pairs'
    headers (``check``), plans the pairs still to do, starts Ray only when there is work,
    runs ``pipeline(store, work, pairs)``, then writes the manifest and ``rejects.parquet``.

    Args:
        spec: the run's spec (``out``, ``if_busy``, ``verify``, ``num_cpus``, ``debug``).
        kind: ``"fusion"`` or ``"pointer"``.
        settings: what makes rows incompatible when it changes (stored in the manifest).
        found: the discovered pairs and discovery rejects.
        check: pairs -> (checked pairs with ``pair`` and ``fingerprint``, probe rejects).
        first_role: the role whose decode rejects mean its file was not read (for the count
            of files read).
    """
    out = spec.out
    check_writable(out, "--out")
    summary = Summary(out_dir=str(out), pairs_found=len(found.pairs))
    with ShardStore(out, kind=kind, settings=settings, wait=spec.if_busy == "wait", verify=spec.verify) as store:
        summary.took_over = store.took_over
        checked, probe_rejects = check(found.pairs)
        pairs = {c.pair.pair_id: c.pair for c in checked}
        work = store.plan({c.pair.pair_id: c.fingerprint for c in checked})
        summary.pairs_already_done = sum(1 for c in checked if store.items.get(c.pair.pair_id) and store.items[c.pair.pair_id].complete())
        summary.removed_orphans, summary.invalidated_files = store.removed_orphans, store.invalidated_files
        summary.damaged_files = list(store.damaged_files)
        progress = None
        if work:
            init_ray(spec.num_cpus, debug=spec.debug)
            progress = pipeline(store, work, pairs)
        rejects = store.all_rejects(found.rejects + probe_rejects, present={c.pair.pair_id for c in checked})
        summary.new_rejects = store.new_rejects(rejects)  # before finish() rewrites the table
        summary.changed = store.finish(rejects) or bool(work)
        summary.rejects = rejects
        summary.total_rows = sum(entry["rows"] for entry in store.files.values())
        summary.total_files = len(store.files)
    summary.pairs_processed = len(work)
    if progress is not None:
        summary.segments_written = progress.rows
        summary.shards_written = progress.shards
        summary.audio_seconds = progress.audio_seconds
        summary.files_read = 2 * len(work) - sum(r.reason.startswith(f"{first_role}:") for r in progress.decode_rejects)
    summary.wall_seconds = time.perf_counter() - started
    return summary


ENTRY_POINT = EntryPoint(PROG, __doc__, add_arguments, reporting(lambda args: run(FusionPreprocessSpec.from_args(args))))
spec = FusionPreprocessSpec  # keyword arguments -> the spec of a run
build_parser, main = ENTRY_POINT.build_parser, ENTRY_POINT.main


if __name__ == "__main__":
    sys.exit(main())
