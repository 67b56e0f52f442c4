"""Preprocessing throughput: the Ray Data pipeline against a plain loop and the codec's ceiling.

    python bench/preprocess.py [--codec mel|encodec_24khz|both] [--minutes 10]
                               [--segment-seconds 16] [--memory] [--work DIR] [--smoke]

One generated corpus (pairs of ~30 s, enough for ``--minutes`` of paired audio) is
preprocessed three ways per codec, with the same segmenting and encode batch:

- **pipeline**: ``pipelines.preprocess_fusion.run`` into a fresh folder. Ray is started
  once beforehand and a one-pair warm-up run precedes the timed one, so neither Ray's
  start-up nor its workers' first import of torch is counted.
- **loop**: one process, torch's default thread count, no Ray: the pipeline's own
  ``decode_fusion_pairs`` reads and cuts each pair, input and target windows are encoded
  in one batch, and the pipeline's ``write_fusion_shard`` and ``ShardStore`` write the same
  shards and manifest. The two outputs are compared segment by segment.
- **ceiling**: the codec alone on windows already in memory (no I/O), torch's default
  thread count, timed per call (the median call counts): the speed the pipeline can approach.

Speeds are audio-seconds per wall-second, counted as the pipeline's ``Summary`` counts
them: seconds of paired windows written (a pair-second is an input and a target second).

``--memory`` runs the whole mel pipeline on the corpus and on one four times larger, each
in a fresh subprocess with a Ray of its own, and reports the peak of the summed PSS of the
subprocess and every Ray process it starts. The aim is 4x within 1.3x of 1x.

Numbers are printed and written to ``WORK/results.json``; run on an otherwise idle
machine (a busy start is flagged). EnCodec weights cannot be downloaded here, so
``encodec_24khz`` is a randomly initialised model (seed 0), which costs as much to run as
the trained one. ``--smoke`` (two one-window pairs) checks that everything runs.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a file: make the project importable
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow.parquet as pq
import ray  # also puts the psutil that Ray bundles on sys.path
import torch

from jingle.datasets.audio import Segmenting
from jingle.datasets.pairs import discover_fusion_pairs, fingerprint_files
from jingle.datasets.fusion_preprocess import decode_fusion_pairs, encode_windows, write_fusion_shard
from jingle.datasets.shards import ShardStore, fusion_schema, latents_to_numpy, shard_paths
from bench.machine import add_ray_address_argument, describe_machine, start_ray
from bench.preprocess_memory import LATENT_DTYPE, MEMORY_RATIO_AIM, ROWS_PER_SHARD, measure_memory, memory_lines
from jingle.datasets.synth import CorpusSpec, write_fusion_corpus
from jingle.models.codecs import build_codec
from jingle.pipelines import preprocess_fusion
from jingle.pipelines.common import OneLineParser


REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_CODECS = ("mel", "encodec_24khz")
PAIR_SECONDS = 30.0  # about how long a generated pair is
CORPUS_SEED = 0
PIPELINE_OF_CEILING_AIM = 0.85  # encodec_24khz only: mel is reported without an aim
PIPELINE_OF_LOOP_AIM = 1.0
MEMORY_SCALE = 4  # the larger corpus of --memory, in multiples of the corpus
MEGABYTE = 1024 * 1024

# --------------------------------------------------------------------- results


@dataclass
class Measurement:
    """One way of preprocessing (or only encoding) the corpus, timed."""

    method: str  # "pipeline", "loop" or "ceiling"
    audio_seconds: float  # paired audio, as Summary counts it
    wall_seconds: float
    segments: int

    @property
    def audio_seconds_per_second(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "audio_seconds_per_second": self.audio_seconds_per_second}


@dataclass
class CodecResult:
    codec: str
    ceiling: Measurement
    loop: Measurement
    pipeline: Measurement
    pipeline_warmup_wall_seconds: float  # the one-pair run before the timed one
    max_latent_difference: float  # pipeline against loop, over every segment

    @property
    def pipeline_of_loop(self) -> float:
        return self.pipeline.audio_seconds_per_second / self.loop.audio_seconds_per_second

    @property
    def pipeline_of_ceiling(self) -> float:
        return self.pipeline.audio_seconds_per_second / self.ceiling.audio_seconds_per_second

    def aim_met(self) -> bool | None:
        """None for mel, which has no aim: cheap to compute, so I/O and scheduling dominate."""
        if self.codec == "mel":
            return None
        return self.pipeline_of_ceiling >= PIPELINE_OF_CEILING_AIM and self.pipeline_of_loop >= PIPELINE_OF_LOOP_AIM

    def lines(self) -> list[str]:
        aim = self.aim_met()
        if aim is None:
            aim_line = "no aim for mel: cheap to compute, so I/O and scheduling dominate"
        else:
            aim_line = (
                f"aim pipeline/ceiling >= {PIPELINE_OF_CEILING_AIM} and pipeline/loop >= {PIPELINE_OF_LOOP_AIM:.2f}: "
                f"{'met' if aim else 'MISSED'}"
            )
        return [
            f"{self.codec:<14} pipeline {self.pipeline.audio_seconds_per_second:.1f} audio-s/s  "
            f"loop {self.loop.audio_seconds_per_second:.1f}  ceiling {self.ceiling.audio_seconds_per_second:.1f}  "
            f"pipeline/loop {self.pipeline_of_loop:.2f}  pipeline/ceiling {self.pipeline_of_ceiling:.2f}",
            f"{'':<14} {aim_line}",
            f"{'':<14} wall s: pipeline {self.pipeline.wall_seconds:.1f} (after a {self.pipeline_warmup_wall_seconds:.1f} s "
            f"one-pair warm-up), loop {self.loop.wall_seconds:.1f}, ceiling {self.ceiling.wall_seconds:.1f} (median call x calls); "
            f"same {self.pipeline.segments} segments in both outputs, "
            f"largest latent difference {self.max_latent_difference:.2g}",
        ]

    def to_dict(self) -> dict:
        return {
            "codec": self.codec,
            "ceiling": self.ceiling.to_dict(),
            "loop": self.loop.to_dict(),
            "pipeline": self.pipeline.to_dict(),
            "pipeline_warmup_wall_seconds": self.pipeline_warmup_wall_seconds,
            "pipeline_of_loop": self.pipeline_of_loop,
            "pipeline_of_ceiling": self.pipeline_of_ceiling,
            "aim_met": self.aim_met(),
            "max_latent_difference": self.max_latent_difference,
        }


# ---------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class CorpusPlan:
    """A generated corpus whose pairs each hold a whole number of windows.

    Every pair lasts ``windows_per_pair`` segments plus a quarter to three quarters of a
    second, so resampling cannot lose a window and the dropped tail stays small: the
    audio the pipeline counts is ``pairs * windows_per_pair * segment_seconds``.
    """

    pairs: int
    windows_per_pair: int
    segment_seconds: float
    seed: int = CORPUS_SEED

    @property
    def segments(self) -> int:
        return self.pairs * self.windows_per_pair

    @property
    def audio_seconds(self) -> float:
        return self.segments * self.segment_seconds

    def spec(self) -> CorpusSpec:
        whole_windows_seconds = self.windows_per_pair * self.segment_seconds
        return CorpusSpec(
            pairs=self.pairs, min_seconds=whole_windows_seconds + 0.25, max_seconds=whole_windows_seconds + 0.75, seed=self.seed
        )

    def folder_name(self) -> str:
        return f"corpus-{self.pairs}x{self.windows_per_pair}x{self.segment_seconds:g}s-seed{self.seed}"


def plan_corpus(*, minutes: float, segment_seconds: float, smoke: bool) -> CorpusPlan:
    """Pairs of ~30 s reaching ``minutes`` of paired audio; ``smoke``: two one-window pairs."""
    if smoke:
        return CorpusPlan(pairs=2, windows_per_pair=1, segment_seconds=segment_seconds)
    windows_per_pair = max(1, round(PAIR_SECONDS / segment_seconds))
    pairs = math.ceil(minutes * 60 / (windows_per_pair * segment_seconds))
    return CorpusPlan(pairs=pairs, windows_per_pair=windows_per_pair, segment_seconds=segment_seconds)


def make_corpus(work: Path, plan: CorpusPlan) -> Path:
    """Write the planned corpus under ``work``, or reuse the one a previous run left."""
    root = work / plan.folder_name()
    stamp = root / "corpus.json"
    if stamp.exists() and json.loads(stamp.read_text()) == asdict(plan):
        print(f"[bench] reusing the corpus in {root}", file=sys.stderr)
        return root
    shutil.rmtree(root, ignore_errors=True)
    started = time.perf_counter()
    write_fusion_corpus(root, plan.spec())
    stamp.write_text(json.dumps(asdict(plan)))  # last, so that an interrupted corpus is made again
    print(
        f"[bench] generated {plan.pairs} pairs ({plan.audio_seconds / 60:.1f} min of paired windows) in {root} "
        f"in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    return root


def write_first_pair_manifest(corpus: Path, path: Path) -> Path:
    """A manifest of the corpus's first pair, for the pipeline's warm-up run."""
    first = discover_fusion_pairs(corpus).pairs[0]
    path.write_text(f"pair_id,input,target\n{first.pair_id},{first.input_path},{first.target_path}\n")
    return path


def random_encodec_checkpoint(work: Path) -> Path:
    """A randomly initialised EnCodec 24 kHz (seed 0), saved once: no weights can be downloaded."""
    from encodec import EncodecModel

    path = work / "encodec_24khz-random-seed0.th"
    if not path.exists():
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = EncodecModel.encodec_model_24khz(pretrained=False)
        partial = path.with_suffix(".part")
        torch.save(model.state_dict(), partial)
        os.replace(partial, path)
    return path


# -------------------------------------------------------------------- pipeline


def pipeline_spec(
    pairs: Path, out_dir: Path, *, codec_name: str, checkpoint: Path | None, segmenting: Segmenting, encode_batch: int
):
    """The ``jingle preprocess fusion`` run of one benchmark measurement."""
    return preprocess_fusion.spec(pairs=str(pairs), out=out_dir, codec=codec_name, codec_checkpoint=str(checkpoint) if checkpoint else None,
                                  segment_seconds=segmenting.segment_seconds, rows_per_shard=ROWS_PER_SHARD, latent_dtype=LATENT_DTYPE,
                                  encode_batch=encode_batch, quiet=True)


def run_pipeline(
    pairs: Path, out_dir: Path, *, codec_name: str, checkpoint: Path | None, segmenting: Segmenting, encode_batch: int
) -> Measurement:
    """Time ``preprocess_fusion.run`` into a fresh ``out_dir`` (Ray is already up)."""
    shutil.rmtree(out_dir, ignore_errors=True)
    spec = pipeline_spec(pairs, out_dir, codec_name=codec_name, checkpoint=checkpoint, segmenting=segmenting, encode_batch=encode_batch)
    started = time.perf_counter()
    summary = preprocess_fusion.run(spec)
    wall_seconds = time.perf_counter() - started
    if summary.rejects:
        raise RuntimeError(f"the pipeline rejected generated files: {summary.rejects[:3]}")
    return Measurement("pipeline", summary.audio_seconds, wall_seconds, summary.segments_written)


# ------------------------------------------------------------------------ loop


def decode_corpus(pairs: Path, *, sample_rate: int, segmenting: Segmenting) -> Iterator[dict[str, np.ndarray]]:
    """Every pair through the pipeline's ``decode_fusion_pairs``, one pair at a time: blocks
    of rows with ``input_audio`` and ``target_audio`` windows, [N, S] each."""
    for pair in discover_fusion_pairs(pairs).pairs:
        item = {
            "pair_id": np.array([pair.pair_id], dtype=object),
            "input_path": np.array([pair.input_path], dtype=object),
            "target_path": np.array([pair.target_path], dtype=object),
            "fingerprint": np.array([fingerprint_files(pair.input_path, pair.target_path)], dtype=object),
            "skip": np.array(["[]"], dtype=object),
        }
        for block in decode_fusion_pairs(item, sample_rate=sample_rate, segmenting=segmenting.to_dict()):
            if block["reject_reason"][0]:
                raise RuntimeError(f"generated pair {pair.pair_id} was rejected: {block['reject_reason'][0]}")
            yield block


def rebatch(batches: Iterable[dict[str, np.ndarray]], size: int) -> Iterator[dict[str, np.ndarray]]:
    """Regroup batches of rows into batches of ``size`` rows (the last may be short), as
    Ray Data does for ``map_batches(batch_size=size)``."""
    waiting: list[dict[str, np.ndarray]] = []
    rows = 0
    for batch in batches:
        waiting.append(batch)
        rows += len(batch["pair_id"])
        while rows >= size:
            joined = {key: np.concatenate([part[key] for part in waiting]) for key in waiting[0]}
            yield {key: column[:size] for key, column in joined.items()}
            waiting = [{key: column[size:] for key, column in joined.items()}]
            rows -= size
    if rows:
        yield {key: np.concatenate([part[key] for part in waiting]) for key in waiting[0]}


def run_loop(
    pairs: Path, out_dir: Path, *, codec_name: str, checkpoint: Path | None, segmenting: Segmenting, encode_batch: int
) -> Measurement:
    """Preprocess in this process without Ray: the pipeline's stages, one after another.

    Decoding, shard writing and the manifest are the pipeline's own functions, so the loop
    does the same work and leaves the same output; only the scheduling differs.
    """
    shutil.rmtree(out_dir, ignore_errors=True)
    started = time.perf_counter()
    codec = build_codec(codec_name, checkpoint=checkpoint)
    frames = codec.frames_for_seconds(segmenting.segment_seconds)
    schema = fusion_schema(dim=codec.dim, frames=frames, latent_dtype=LATENT_DTYPE, codec_id=codec.id)
    settings = {"codec": codec.describe(), "segmenting": segmenting.to_dict(), "latent_dtype": LATENT_DTYPE}
    decoded = decode_corpus(pairs, sample_rate=codec.sample_rate, segmenting=segmenting)
    encoded = (encode_windows(codec, rows, np.dtype(LATENT_DTYPE)) for rows in rebatch(decoded, encode_batch))
    segments, audio_seconds = 0, 0.0
    with ShardStore(out_dir, kind="fusion", settings=settings) as store:
        for rows in rebatch(encoded, ROWS_PER_SHARD):
            record = write_fusion_shard(
                rows, out_dir=str(out_dir), schema=schema, codec_id=codec.id, sample_rate=codec.sample_rate, frame_rate=codec.frame_rate
            )
            entry = json.loads(record["entry"][0])
            store.commit(entry)
            segments += entry["rows"]
            audio_seconds += entry["audio_seconds"]
        store.finish([])
    return Measurement("loop", audio_seconds, time.perf_counter() - started, segments)


def compare_outputs(pipeline_dir: Path, loop_dir: Path) -> float:
    """Check that both outputs hold the same segments cut from the same audio; return the
    largest latent difference (batch grouping differs, so it need not be zero)."""

    def read(out_dir: Path) -> dict[tuple[str, int], tuple[str, np.ndarray, np.ndarray]]:
        rows = {}
        for path in shard_paths(out_dir):
            table = pq.read_table(path)
            inputs = latents_to_numpy(table["input_latent"])  # [N, D, T]
            targets = latents_to_numpy(table["target_latent"])  # [N, D, T]
            keys = zip(table["pair_id"].to_pylist(), table["segment_index"].to_pylist(), table["audio_sha256"].to_pylist())
            for row, (pair_id, index, audio_hash) in enumerate(keys):
                rows[(pair_id, index)] = (audio_hash, inputs[row], targets[row])
        return rows

    pipeline_rows, loop_rows = read(pipeline_dir), read(loop_dir)
    if pipeline_rows.keys() != loop_rows.keys():
        raise AssertionError(f"pipeline and loop wrote different segments, e.g. {sorted(pipeline_rows.keys() ^ loop_rows.keys())[:3]}")
    largest = 0.0
    for key, (audio_hash, input_latent, target_latent) in pipeline_rows.items():
        loop_hash, loop_input, loop_target = loop_rows[key]
        if audio_hash != loop_hash:
            raise AssertionError(f"pipeline and loop cut different audio for segment {key}")
        largest = max(largest, float(np.abs(input_latent - loop_input).max()), float(np.abs(target_latent - loop_target).max()))
    return largest


# --------------------------------------------------------------------- ceiling


def measure_ceiling(
    *, codec_name: str, checkpoint: Path | None, segmenting: Segmenting, encode_batch: int, segments: int
) -> Measurement:
    """The codec alone: encode as many windows as the corpus has (in whole batches), from
    memory, inputs and targets in one call as the pipeline does, after one warm-up call.

    Each call is timed and the median call stands for all of them, so that a moment of
    load from elsewhere on the machine does not lower the ceiling the pipeline is held to.
    """
    codec = build_codec(codec_name, checkpoint=checkpoint)
    window = round(segmenting.segment_seconds * codec.sample_rate)
    generator = torch.Generator().manual_seed(0)
    audio = 0.1 * torch.randn(2 * encode_batch, 1, window, generator=generator)  # [2N, 1, S]: N inputs, N targets
    calls = max(3, math.ceil(segments / encode_batch))
    call_seconds = []
    with torch.inference_mode():
        codec.encode(audio)  # warm-up: first-call allocations and kernel choices
        for _ in range(calls):
            started = time.perf_counter()
            codec.encode(audio).float().numpy()  # [2N, D, T], taken out of torch as the encoder does
            call_seconds.append(time.perf_counter() - started)
    pair_windows = calls * encode_batch
    return Measurement("ceiling", pair_windows * segmenting.segment_seconds, calls * float(np.median(call_seconds)), pair_windows)


# ------------------------------------------------------------------------ main


def benchmark_codec(codec_name: str, corpus: Path, plan: CorpusPlan, work: Path, encode_batch: int) -> CodecResult:
    """Ceiling, loop and pipeline of one codec on the corpus (Ray is already up)."""
    options = {
        "codec_name": codec_name,
        "checkpoint": random_encodec_checkpoint(work) if codec_name.startswith("encodec") else None,
        "segmenting": Segmenting(segment_seconds=plan.segment_seconds),
        "encode_batch": encode_batch,
    }
    print(f"[bench] {codec_name}: ceiling", file=sys.stderr)
    ceiling = measure_ceiling(segments=plan.segments, **options)
    print(f"[bench] {codec_name}: loop", file=sys.stderr)
    loop = run_loop(corpus, work / f"out-{codec_name}-loop", **options)
    print(f"[bench] {codec_name}: pipeline (a one-pair warm-up, then the timed run)", file=sys.stderr)
    warmup = run_pipeline(write_first_pair_manifest(corpus, work / "warmup.csv"), work / f"out-{codec_name}-warmup", **options)
    pipeline = run_pipeline(corpus, work / f"out-{codec_name}-pipeline", **options)
    if not pipeline.segments == loop.segments == plan.segments:
        raise AssertionError(f"segments written: pipeline {pipeline.segments}, loop {loop.segments}, planned {plan.segments}")
    difference = compare_outputs(work / f"out-{codec_name}-pipeline", work / f"out-{codec_name}-loop")
    return CodecResult(codec_name, ceiling, loop, pipeline, warmup.wall_seconds, difference)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="bench/preprocess.py", description=__doc__.splitlines()[0])
    parser.add_argument("--codec", choices=BENCH_CODECS + ("both",), default="both", help="codec(s) to measure (default: both)")
    parser.add_argument("--minutes", type=float, default=10.0, help="paired audio in the corpus (default: 10)")
    parser.add_argument("--segment-seconds", type=float, default=16.0, help="window length (default: 16)")
    parser.add_argument("--encode-batch", type=int, default=4, help="segments per encoder call (default: 4, the pipeline's on CPU)")
    parser.add_argument("--memory", action="store_true", help=f"also measure peak memory for 1x and {MEMORY_SCALE}x the corpus (mel)")
    parser.add_argument("--work", default=str(REPO_ROOT / "out" / "bench"), help="folder for corpora, outputs and results.json")
    parser.add_argument("--smoke", action="store_true", help="two one-window pairs, to check that everything runs")
    add_ray_address_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.minutes > 0:
        parser.error(f"--minutes must be positive, got {args.minutes:g}")
    if not args.segment_seconds >= 1:
        parser.error(f"--segment-seconds must be at least 1, got {args.segment_seconds:g}")
    if args.encode_batch < 1:
        parser.error(f"--encode-batch must be at least 1, got {args.encode_batch}")
    codecs = BENCH_CODECS if args.codec == "both" else (args.codec,)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    machine = describe_machine()  # before anything runs: the load average tells whether the machine was idle

    plan = plan_corpus(minutes=args.minutes, segment_seconds=args.segment_seconds, smoke=args.smoke)
    corpus = make_corpus(work, plan)
    start_ray(args.ray_address)
    machine["ray_cpus"] = ray.cluster_resources().get("CPU", 0)
    results = [benchmark_codec(codec_name, corpus, plan, work, args.encode_batch) for codec_name in codecs]
    ray.shutdown()  # the --memory runs start their own Ray, and only theirs may be counted

    memory_runs = []
    if args.memory:
        segmenting = Segmenting(segment_seconds=args.segment_seconds)
        for scale in (1, MEMORY_SCALE):
            print(f"[bench] memory: the mel pipeline on {scale}x the corpus, in a fresh subprocess", file=sys.stderr)
            scaled_corpus = make_corpus(work, replace(plan, pairs=plan.pairs * scale))
            memory_runs.append(
                measure_memory(
                    scaled_corpus, work / f"out-memory-{scale}x", segmenting=segmenting, encode_batch=args.encode_batch, scale=scale
                )
            )

    lines = [
        f"machine        {machine['logical_cores']} logical cores ({machine['physical_cores']} physical), {machine['cpu']}, "
        f"torch {machine['torch_default_threads']} threads, Ray {machine['ray_cpus']:g} CPUs, "
        f"load average {machine['load_average_at_start']} at start",
        f"corpus         {plan.pairs} pairs, {plan.audio_seconds / 60:.1f} min of paired audio, "
        f"{plan.segments} segments of {plan.segment_seconds:g} s, encode batch {args.encode_batch}",
    ]
    if machine["load_average_at_start"] > 0.5 * machine["logical_cores"]:
        lines.append("warning        the machine was busy at start: the speeds below are low by an unknown amount")
    for result in results:
        lines += result.lines()
    if memory_runs:
        lines += memory_lines(memory_runs)
    results_path = work / "results.json"
    lines.append(f"results        {results_path}")
    print("\n".join(lines))

    memory = None
    if memory_runs:
        ratio = memory_runs[1].peak_megabytes / memory_runs[0].peak_megabytes
        memory = {"codec": "mel", "runs": [asdict(run) for run in memory_runs], "ratio": ratio, "aim": MEMORY_RATIO_AIM}
    results_path.write_text(
        json.dumps(
            {
                "machine": machine,
                "corpus": {**asdict(plan), "minutes": plan.audio_seconds / 60, "smoke": args.smoke},
                "encode_batch": args.encode_batch,
                "codecs": {result.codec: result.to_dict() for result in results},
                "memory": memory,
                "report": lines,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
