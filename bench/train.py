"""Training throughput: the Ray Train loop against a plain PyTorch loop, and 2 workers against 1.

    python bench/train.py [--config configs/demo.json] [--steps 30] [--segment-seconds 16]
                          [--work DIR] [--smoke] [--ray-address ADDR]

One generated corpus is preprocessed (mel, the pipeline's own ``preprocess_fusion.run``)
into one shard folder: a validation pair and enough training pairs for two workers to
take ``--steps`` timed steps each. The model, objective, batch size and optimiser come
from ``--config``; the runs differ only in how the steps are driven:

- **plain loop**: one process, no Ray: the model built from the config (seeded as the
  worker seeds it), ``FusionObjective`` with the mel codec, the pipeline's ``train_step``,
  optimiser and scheduler, on batches of ``training.batch_size`` read from the Parquet
  files with pyarrow, training pairs only (``split_pair_ids``, as the pipeline splits them),
  before the clock starts. Two warm-up steps, then ``--steps`` timed steps. Torch runs
  with as many threads as a one-worker Ray Train worker trains on (``worker_torch_threads``).
- **Ray Train, 1 and 2 workers**: the real ``pipelines.train_fusion.run`` for one epoch,
  with ``training.checkpoint_every_steps`` set to ``--steps``, so that the loop reports
  (with a checkpoint) every ``--steps`` steps. Ray names each checkpoint folder after the
  moment rank 0 reports it, and the checkpoint holds the step, so the speed is timed from
  inside the loop: steps between the first and the last mid-epoch report over the time
  between them. Start-up, the first ``--steps`` steps (the warm-up), validation and the
  end-of-epoch checkpoint fall outside; reading the batches and saving one checkpoint per
  ``--steps`` steps fall inside. With 2 workers each worker takes one batch per step, so
  a step trains on twice the segments: the 2-against-1 figure compares segments per
  second. One worker has the whole epoch to itself, so it is timed over three times
  ``--steps``, two workers over ``--steps``.

Ray sets each worker's ``OMP_NUM_THREADS`` to the whole CPUs it was given (one), so the
worker loop sets torch's threads itself (``worker_torch_threads``: the node's cores shared
among its workers); the plain loop runs on the same count. Where that differs from torch's
default, the plain loop also runs on the default, printed as context. The aim (from the
issue) is Ray Train with one worker at >= 0.9 of the plain loop on the same threads; 2
workers against 1 is reported without an aim.

Numbers are printed and written to ``WORK/results.json``; run on an otherwise idle machine
(a busy start is flagged). ``--smoke`` (two steps on 1 s segments) checks that everything
runs; its figures mean nothing: reports two steps apart wait on Ray Train's controller.
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
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import ray  # also puts the psutil that Ray bundles on sys.path
import torch

from jingle.datasets.shards import latents_to_numpy, shard_paths
from bench.machine import add_ray_address_argument, describe_machine, start_ray
from bench.train_data import CODEC, StepPlan, make_shards, plan_data
from jingle.models.cascade import build_fusion_model
from jingle.training.checkpoints import load_state
from jingle.models.codecs import build_codec
from jingle.core.config import ConfigError
from jingle.training.fusion_config import FusionTrainConfig
from jingle.training.fusion_training import FusionObjective, train_step
from jingle.training.optimization import build_optimizer, build_scheduler
from jingle.pipelines import train_fusion
from jingle.pipelines.common import OneLineParser
from jingle.pipelines.shard_data import ShardData, split_pair_ids
from jingle.pipelines.tasks.fusion import LATENT_COLUMNS
from jingle.pipelines.train import worker_resources
from jingle.pipelines.worker import worker_torch_threads


REPO_ROOT = Path(__file__).resolve().parent.parent
PLAIN_WARMUP_STEPS = 2
RAY_OF_PLAIN_AIM = 0.9
# How often Ray Train V2's controller takes a report from each worker (its default; the
# variable is Ray's): a loop reporting more often than this waits for it.
CONTROLLER_POLL_SECONDS = float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "2.0"))
SMOKE = {"steps": 2, "segment_seconds": 1.0}



# --------------------------------------------------------------------- results


@dataclass
class Measurement:
    """Training steps timed one way; ``workers`` batches of ``batch_size`` per step."""

    method: str  # "plain", "ray-train-1" or "ray-train-2"
    steps: int
    wall_seconds: float
    batch_size: int
    workers: int = 1

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.wall_seconds

    @property
    def segments_per_second(self) -> float:
        return self.steps_per_second * self.batch_size * self.workers

    def to_dict(self) -> dict:
        return {**asdict(self), "steps_per_second": self.steps_per_second, "segments_per_second": self.segments_per_second}


@dataclass
class RayRun:
    """One whole ``train_fusion.run`` and the mid-epoch reports of its loop."""

    workers: int
    epoch_steps: int
    wall_seconds: float  # the whole run, start-up included
    report_steps: list[int]  # steps at which the loop reported a mid-epoch checkpoint
    report_seconds: list[float]  # when, from the first of them

    def measurement(self, batch_size: int) -> Measurement:
        """The steps between the first and the last mid-epoch report, over their time."""
        return Measurement(
            f"ray-train-{self.workers}", self.report_steps[-1] - self.report_steps[0], self.report_seconds[-1], batch_size, self.workers
        )


# ---------------------------------------------------------------------- probe


def probe_worker_threads(storage: Path, workers: int = 1) -> dict:
    """The torch threads a one-worker Ray Train worker trains on here: the pipeline's own
    rule (``worker_torch_threads``), which the worker loop applies over Ray's OMP_NUM_THREADS."""
    resources = worker_resources(workers, use_gpu=False, streamed=False)
    return {"worker_cpus": resources["CPU"], "torch_threads": worker_torch_threads(workers), "omp_num_threads": None}


# ----------------------------------------------------------------------- plain


def read_training_batches(shards: Path, train_ids: set[str], *, batch_size: int, count: int) -> list[dict[str, torch.Tensor]]:
    """The first ``count`` batches of the training pairs' latents, read with pyarrow file by
    file (cycling if the files run out): ``input_latent`` and ``target_latent``, [B, D, T]."""
    batches: list[dict[str, torch.Tensor]] = []
    while len(batches) < count:
        for path in shard_paths(shards):
            table = pq.read_table(path, columns=[*LATENT_COLUMNS, "pair_id"])
            keep = np.array([pair_id in train_ids for pair_id in table["pair_id"].to_pylist()])
            inputs = latents_to_numpy(table["input_latent"])[keep]  # [N, D, T]
            targets = latents_to_numpy(table["target_latent"])[keep]  # [N, D, T]
            for start in range(0, len(inputs) - batch_size + 1, batch_size):
                batch = {"input_latent": inputs[start : start + batch_size], "target_latent": targets[start : start + batch_size]}
                batches.append({key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in batch.items()})
                if len(batches) == count:
                    return batches
        if not batches:
            raise RuntimeError(f"{shards} holds fewer than {batch_size} training segments")
    return batches


def run_plain_loop(shards: Path, config: FusionTrainConfig, *, steps: int, threads: int) -> Measurement:
    """``steps`` timed steps of the pipeline's ``train_step`` in this process, no Ray, with
    ``threads`` torch threads (restored afterwards), after ``PLAIN_WARMUP_STEPS``.

    The batches are read before the clock starts, so the loop is timed on training alone:
    the strictest baseline for a pipeline that must hide its reading behind the steps.
    """
    training = config.training
    data = ShardData.open(shards)
    train_ids, _ = split_pair_ids(sorted(data.rows_by_pair), training.validation_fraction, training.seed)
    batches = read_training_batches(shards, set(train_ids), batch_size=training.batch_size, count=PLAIN_WARMUP_STEPS + steps)
    default_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(training.seed)  # as the worker seeds model init
        codec = build_codec(data.codec["name"])
        model = build_fusion_model(config.model)
        objective = FusionObjective(codec=codec, config=config, cascade=config.model.num_stages == 2)
        optimizer = build_optimizer(model, training)
        scheduler = build_scheduler(optimizer, training, total_steps=len(batches))
        generator = torch.Generator().manual_seed(training.seed * 1_000_003)  # the worker's, rank 0, step 0
        options = {"scheduler": scheduler, "generator": generator, "grad_clip": training.grad_clip}
        for batch in batches[:PLAIN_WARMUP_STEPS]:
            train_step(model, batch, objective, optimizer, **options)
        started = time.perf_counter()
        for batch in batches[PLAIN_WARMUP_STEPS:]:
            train_step(model, batch, objective, optimizer, **options)
        wall_seconds = time.perf_counter() - started
    finally:
        torch.set_num_threads(default_threads)
    return Measurement("plain", steps, wall_seconds, training.batch_size)


# ----------------------------------------------------------------------- ray


def checkpoint_time(folder: Path) -> datetime:
    """When rank 0 reported a checkpoint: Ray Train names the folder after that moment
    (``checkpoint_%Y-%m-%d_%H-%M-%S.%f``, local time), the same on every rank."""
    try:
        return datetime.strptime(folder.name.removeprefix("checkpoint_"), "%Y-%m-%d_%H-%M-%S.%f")
    except ValueError:
        raise RuntimeError(f"cannot read the time from checkpoint folder {folder.name}: has Ray Train changed its naming?") from None


def run_ray_train(shards: Path, config_path: Path, storage: Path, *, workers: int, report_every: int) -> RayRun:
    """One whole ``train_fusion.run`` (Ray is already up) into a fresh storage folder (its
    own, so that every run starts its MLflow store and none resumes), and the time and step
    of each mid-epoch checkpoint it left."""
    shutil.rmtree(storage, ignore_errors=True)
    overrides = {
        "training.epochs": 1,
        "training.checkpoint_every_steps": report_every,
        "training.num_to_keep": 1_000_000,  # keep every report: mid-epoch ones score worst (val_total inf)
        "losses.teacher_weight": 0,  # the generated pairs here bring no reference arrangement
    }
    spec = train_fusion.spec(data=str(shards), config=str(config_path), workers=workers, storage=storage, name="bench", overrides=overrides)
    started = time.perf_counter()
    summary = train_fusion.run(spec)
    wall_seconds = time.perf_counter() - started
    reports = sorted(
        (load_state(folder, kind="fusion").step, checkpoint_time(folder)) for folder in Path(summary.run_dir).glob("checkpoint_*") if folder.is_dir()
    )
    reports = [(step, moment) for step, moment in reports if step < summary.step]  # the end of the epoch follows validation
    if len(reports) < 2 or any(step % report_every for step, _ in reports):
        raise RuntimeError(f"expected mid-epoch checkpoints every {report_every} steps, found them at steps {[step for step, _ in reports]}")
    first = reports[0][1]
    return RayRun(
        workers=workers,
        epoch_steps=summary.step,
        wall_seconds=wall_seconds,
        report_steps=[step for step, _ in reports],
        report_seconds=[(moment - first).total_seconds() for _, moment in reports],
    )


# ------------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="bench/train.py", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO_ROOT / "configs" / "demo.json"), help="training config (default: configs/demo.json)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps of the plain loop, and at least of each Ray Train run (default: 30)")
    parser.add_argument("--segment-seconds", type=float, default=16.0, help="window length (default: 16)")
    parser.add_argument("--work", default=str(REPO_ROOT / "out" / "bench-train"), help="folder for the corpus, shards, runs and results.json")
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE['steps']} steps on {SMOKE['segment_seconds']:g} s segments, to check that everything runs")
    add_ray_address_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps, args.segment_seconds = SMOKE["steps"], SMOKE["segment_seconds"]
    if args.steps < 2:
        parser.error(f"--steps must be at least 2, got {args.steps}")
    if not args.segment_seconds >= 1:
        parser.error(f"--segment-seconds must be at least 1, got {args.segment_seconds:g}")
    try:
        config = FusionTrainConfig.from_file(args.config)
    except ConfigError as error:
        parser.error(str(error))
    codec_dim = build_codec(CODEC).dim
    if config.model.latent_dim != codec_dim:
        parser.error(f"--config {args.config}: model.latent_dim must be {codec_dim}, the mel codec's, got {config.model.latent_dim}")
    config_path = Path(args.config).resolve()
    batch_size = config.training.batch_size
    steps = StepPlan(args.steps)
    plan = plan_data(steps, batch_size=batch_size, segment_seconds=args.segment_seconds, config=config)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    machine = describe_machine()  # before anything runs: the load average tells whether the machine was idle

    start_ray(args.ray_address)
    machine["ray_cpus"] = ray.cluster_resources().get("CPU", 0)
    machine["worker_cpus"] = {workers: worker_resources(workers, use_gpu=False, streamed=False)["CPU"] for workers in (1, 2)}
    shards = make_shards(work, plan)

    print("[bench] probing a Ray Train worker's torch threads", file=sys.stderr)
    probe = probe_worker_threads(work / "runs")
    print(f"[bench] plain loop: {args.steps} steps on {probe['torch_threads']} torch thread(s)", file=sys.stderr)
    plain = run_plain_loop(shards, config, steps=args.steps, threads=probe["torch_threads"])
    plain_default = None  # what the workers' thread count costs, where it differs from torch's default
    if machine["torch_default_threads"] != probe["torch_threads"]:
        print(f"[bench] plain loop: {args.steps} steps on torch's default {machine['torch_default_threads']} threads", file=sys.stderr)
        plain_default = run_plain_loop(shards, config, steps=args.steps, threads=machine["torch_default_threads"])
    runs = {}
    for workers in (1, 2):
        print(f"[bench] ray train: {workers} worker(s), a checkpoint every {steps.report_every} steps", file=sys.stderr)
        storage = work / "runs" / f"{workers}-workers"
        runs[workers] = run_ray_train(shards, config_path, storage, workers=workers, report_every=steps.report_every)
    machine["load_average_at_end"] = round(os.getloadavg()[0], 2)
    ray.shutdown()

    one, two = (runs[workers].measurement(batch_size) for workers in (1, 2))
    one_of_plain = one.steps_per_second / plain.steps_per_second
    two_of_one = two.segments_per_second / one.segments_per_second
    aim_met = one_of_plain >= RAY_OF_PLAIN_AIM
    segment_frames = build_codec(CODEC).frames_for_seconds(plan.segment_seconds)
    lines = [
        f"machine        {machine['logical_cores']} logical cores ({machine['physical_cores']} physical), {machine['cpu']}, "
        f"torch default {machine['torch_default_threads']} threads, Ray {machine['ray_cpus']:g} CPUs, "
        f"load average {machine['load_average_at_start']} at start, {machine['load_average_at_end']} at end",
        f"threads        a Ray Train worker gets {machine['worker_cpus'][1]:g} CPU (2 workers: {machine['worker_cpus'][2]:g} each) "
        f"and {probe['torch_threads']} torch thread(s); the plain loop ran on {probe['torch_threads']}",
        f"data           {CODEC} latents, segments of {plan.segment_seconds:g} s ({segment_frames} frames), batch {batch_size} "
        f"per worker, {config_path.name}; {plan.train_pairs} training pairs of {plan.windows_per_pair} segments, {plan.validation_pairs} validation pair",
        f"method         plain loop: {plain.steps} steps timed after {PLAIN_WARMUP_STEPS} warm-up, batches read beforehand; Ray Train: train_fusion.run for one "
        f"epoch, timed inside the loop from its first to its last mid-epoch report (a checkpoint every {steps.report_every} steps)",
    ]
    if machine["load_average_at_start"] > 0.5 * machine["logical_cores"]:
        lines.append("warning        the machine was busy at start: the speeds below are low by an unknown amount")
    if args.smoke:
        lines.append("warning        --smoke: two steps between reports, so the figures below mean nothing")
    closest = min(min(np.diff(run.report_seconds)) for run in runs.values())
    if closest < CONTROLLER_POLL_SECONDS:
        lines.append(
            f"warning        two reports were {closest:.1f} s apart, closer than Ray Train's {CONTROLLER_POLL_SECONDS:g} s poll: "
            f"the loop may have waited on them, so Ray Train's speeds are low; raise --steps"
        )
    lines += [
        f"ray-train 1 worker vs plain loop  {one_of_plain:.2f} (steps/s {one.steps_per_second:.2f} vs {plain.steps_per_second:.2f})  "
        f"aim >= {RAY_OF_PLAIN_AIM}: {'met' if aim_met else 'MISSED'}",
        f"ray-train 2 workers vs 1  {two_of_one:.2f}x segments/s ({two.segments_per_second:.2f} vs {one.segments_per_second:.2f}; "
        f"steps/s {two.steps_per_second:.2f} vs {one.steps_per_second:.2f})",
    ]
    if plain_default is not None:
        lines.append(
            f"context        the plain loop on torch's default {machine['torch_default_threads']} threads: "
            f"{plain_default.steps_per_second:.2f} steps/s; against it ray-train 1 worker is {one.steps_per_second / plain_default.steps_per_second:.2f}, "
            f"2 workers {two.segments_per_second / plain_default.segments_per_second:.2f}x in segments/s"
        )
    lines += [
        "ray-train runs "
        + "; ".join(
            f"{run.workers} worker(s): {run.epoch_steps} steps, whole run {run.wall_seconds:.1f} s, "
            f"steps {run.report_steps[0]}-{run.report_steps[-1]} in {run.report_seconds[-1]:.1f} s"
            for run in runs.values()
        ),
    ]
    results_path = work / "results.json"
    lines.append(f"results        {results_path}")
    print("\n".join(lines))

    results_path.write_text(
        json.dumps(
            {
                "machine": machine,
                "worker_threads_probe": probe,
                "data": {**asdict(plan), "codec": CODEC, "segment_frames": segment_frames, "smoke": args.smoke},
                "config": str(config_path),
                "batch_size": batch_size,
                "steps": args.steps,
                "report_every": steps.report_every,
                "method": "ray-train steps/s: the steps between the first and the last mid-epoch checkpoint of one "
                "train_fusion.run, over the time between them (from the checkpoint folders' names)",
                "plain": plain.to_dict(),
                "plain_default_threads": plain_default.to_dict() if plain_default else None,
                "ray_train": {str(workers): measurement.to_dict() for workers, measurement in ((1, one), (2, two))},
                "ray_train_runs": [asdict(run) for run in runs.values()],
                "ray_1_worker_of_plain": one_of_plain,
                "ray_2_workers_of_1_segments": two_of_one,
                "aim": RAY_OF_PLAIN_AIM,
                "aim_met": aim_met,
                "report": lines,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
