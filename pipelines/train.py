"""``jingle train MODEL``: any task on its shards, with Ray Train and MLflow.

    python -m pipelines.train_fusion  --data SHARDS --config configs/fusion.json [--workers N] [--gpu] ...
    python -m pipelines.train_pointer --data SHARDS --config configs/pointer/mini.json ...

The driver opens the shards, lets the task check its config and plan the epoch, splits
pairs into training and validation by a hash of the pair id, opens (or reopens) the MLflow
run, and launches a ``TorchTrainer`` whose workers run ``pipelines.worker.train_worker``
(DDP: gloo on CPU, nccl on GPU). Small shards are read once by every worker and kept in
memory; large ones stream through Ray Data. Checkpoints go to ``STORAGE/NAME``; rerunning
with the same storage and name (or ``--resume``) continues from the latest one with the
same step counter, and a killed worker costs only the steps since the last checkpoint.

Restarts: a worker crash (a killed process, a lost node) starts the worker group again from
the latest checkpoint, up to ``training.max_failures`` times; an error that would happen
again (bad data, a bad config value, a bug: ``DeterministicError``) ends the run at once, in
one line (exit 2 for bad input, 1 for a bug).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

from jingle.core.storage import Location, checkpoint_uri, check_writable, ray_storage
from jingle.training.checkpoints import load_state
from jingle.pipelines.common import DeterministicError, EntryPoint, UsageError, add_common_arguments, init_ray, reporting
from jingle.pipelines.loop import VALIDATION_METRIC
from jingle.pipelines.run_spec import TrainSpec, worker_plan
from jingle.pipelines.shard_data import ShardData
from jingle.pipelines.tasks import Task, get_task
from jingle.pipelines.tracking import ending_tracking_run, open_tracking_run
from jingle.pipelines.worker import WorkerPlan

# Logical CPUs left to Ray Data's read tasks when the data streams: workers that took
# every CPU would starve the reads that feed them (seen on 2 CPUs with 2 workers).
DATA_CPUS = 1.0


def add_train_arguments(parser: argparse.ArgumentParser, task: Task) -> None:
    """The flags every ``jingle train MODEL`` takes, then the task's own."""
    kind = task.name
    parser.add_argument("--data", required=True, help=f"shard folder written by jingle preprocess {kind}")
    parser.add_argument("--validation", default=None, metavar="SHARDS",
                        help="held-out shard folder to validate on; every --data pair then trains (default: a split of --data by pair id)")
    parser.add_argument("--config", required=True, help=f"JSON training config (configs/{kind}...json)")
    parser.add_argument("--workers", type=int, default=None, help="training workers (default: 1 per GPU with --gpu, else 2)")
    parser.add_argument("--gpu", action="store_true", help="one GPU per worker (nccl)")
    parser.add_argument("--storage", default="runs", help="checkpoints and MLflow store: a folder or s3:// / gs:// URI (default: ./runs)")
    parser.add_argument("--name", default=None, help=f"run name (default: {kind}-<config file name>)")
    parser.add_argument("--resume", action="store_true", help="require an earlier run of this name to continue")
    parser.add_argument("--override", action="append", default=[], metavar="SECTION.KEY=JSON", help="change one config value")
    task.add_arguments(parser)
    add_common_arguments(parser)


def count_workers(requested: int | None, use_gpu: bool) -> int:
    import ray

    return requested or (int(ray.cluster_resources().get("GPU", 0)) if use_gpu else 2) or 1


@dataclass(frozen=True)
class RunPlace:
    storage: Location
    name: str
    run_dir: Location


def place_run(spec: TrainSpec, *, codec_id: str | None) -> RunPlace:
    """Where the run's checkpoints go; refuses ``--resume`` without an earlier run, and a
    continued run whose checkpoints were made with another codec or features (before any
    worker starts)."""
    kind, storage, name = spec.task, spec.storage, spec.run_name
    run_dir = storage / name
    if spec.resume and not run_dir.exists():
        raise UsageError(f"--resume: no run {name!r} under {storage}")
    earlier = [entry for entry in run_dir.list() if entry.name.startswith("checkpoint_") and not entry.name.endswith(".json")]
    if earlier:  # Ray numbers a run's checkpoints on, across restarts and resumes
        load_state(str(max(earlier, key=lambda entry: entry.name)), kind=kind, codec_id=codec_id)
    return RunPlace(storage, name, run_dir)


@dataclass
class TrainSummary:
    run_dir: str
    best_checkpoint: str | None
    latest_checkpoint: str | None
    step: int
    epoch: int
    metrics: dict
    tracking_uri: str
    run_id: str
    shown_metrics: tuple[str, ...] = ("total", VALIDATION_METRIC)
    seconds: float = 0.0  # the whole fit, start-up included

    @property
    def step_share(self) -> float | None:
        """Share of the command's time that rank 0 spent in training steps, or None."""
        in_steps = self.metrics.get("run_step_seconds")
        return None if in_steps is None or not self.seconds else min(1.0, in_steps / self.seconds)

    def report(self) -> str:
        # a run without a score reports -inf for it (``validation.score_segments`` 0): not shown
        metrics = ", ".join(f"{key} {self.metrics[key]:.4f}" for key in self.shown_metrics
                            if key in self.metrics and math.isfinite(self.metrics[key]))
        ui = f"mlflow ui --backend-store-uri {self.tracking_uri}"
        lines = [f"trained to step {self.step} (epoch {self.epoch}): {metrics}"]
        if self.step_share is not None:
            lines.append(
                f"  time               {self.seconds:.1f} s in all, {self.step_share:.0%} of it in training steps; "
                f"last epoch {self.metrics['epoch_seconds']:.2f} s, {self.metrics['overhead_seconds']:.2f} s of it outside steps"
            )
        lines += [
            f"  best checkpoint    {self.best_checkpoint}",
            f"  latest checkpoint  {self.latest_checkpoint}",
            f"  run folder         {self.run_dir}",
            f"  MLflow run         {self.run_id} in {self.tracking_uri}",
            f"  open the MLflow UI: {ui}",
        ]
        return "\n".join(lines)


def worker_resources(workers: int, use_gpu: bool, *, streamed: bool) -> dict[str, float]:
    """Resources of one training worker: a CPU each where there is room, else a share
    (leaving room for Ray Data's reads when the data streams)."""
    import ray

    if use_gpu:
        return {"CPU": 1, "GPU": 1}
    cpus = float(ray.cluster_resources().get("CPU", 1))
    spare = DATA_CPUS if streamed else 0.0
    return {"CPU": round(max(0.1, min(1.0, (cpus - spare) / workers)), 2)}


def worker_died(error: BaseException) -> bool:
    """Whether a worker's error in a ``WorkerGroupError`` is its process's death (killed,
    OOM-killed, its node lost) rather than an exception its training function raised."""
    from ray.exceptions import RayActorError

    # A dead worker shows as Ray Train's health-check failure around the actor's death.
    return isinstance(error, RayActorError) or isinstance(getattr(error, "health_check_failure", None), RayActorError)


def deterministic_failure(worker_failures: dict[int, BaseException]) -> DeterministicError | None:
    """The lowest rank's ``DeterministicError`` of a failed worker group, or None: restart.

    A dead worker wins: when one rank dies, the others fail with whatever the broken
    collective or stream raises, which says nothing of the data. An error that would
    happen again happens again on the restart, without a death, and ends the run then.
    """
    if any(worker_died(error) for error in worker_failures.values()):
        return None
    marked = [worker_failures[rank] for rank in sorted(worker_failures) if isinstance(worker_failures[rank], DeterministicError)]
    return marked[0] if marked else None


def failure_line(worker_failures: dict[int, BaseException]) -> str:
    """One line on a failed worker group: a dead worker first, else the lowest rank."""
    rank = min(worker_failures, key=lambda rank: (not worker_died(worker_failures[rank]), rank))
    error = worker_failures[rank]
    error = getattr(error, "health_check_failure", None) or error
    text = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    return f"worker {rank}: {type(error).__name__}" + (f": {text}" if text else "")


def fit_with_restarts(fit: Callable[[], Any], *, max_failures: int, say: Callable[[str], None] | None = None) -> Any:
    """``fit()``, called again after a worker crash, up to ``max_failures`` times (-1: no
    limit); each call continues from the run's latest checkpoint (the same name and storage).

    Ray Train would restart the workers after any error, the same bad shard or config value
    ``max_failures`` more times, so it is given none (``FailureConfig(max_failures=0)``) and
    the restarts are decided here: a worker's ``DeterministicError`` is raised at once.

    Args:
        fit: one ``TorchTrainer.fit()`` of the run.
        max_failures: crashes the run survives (``training.max_failures``).
        say: where the one line per restart goes (default: stderr).
    """
    from ray.train import WorkerGroupError

    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    failures = 0
    while True:
        try:
            return fit()
        except WorkerGroupError as error:
            deterministic = deterministic_failure(error.worker_failures)
            if deterministic is not None:
                raise deterministic from error
            if max_failures != -1 and failures >= max_failures:
                raise RuntimeError(f"training failed {failures + 1} time(s), more than training.max_failures ({max_failures}) allows; "
                                   f"last: {failure_line(error.worker_failures)}") from error
            failures += 1
            limit = "no limit" if max_failures == -1 else f"{failures} of {max_failures}"
            say(f"training: {failure_line(error.worker_failures)}; restarting from the latest checkpoint (restart {limit})")


HEALTH_CHECK_INTERVAL_VARIABLE, HEALTH_CHECK_INTERVAL_SECONDS = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2"


def run_trainer(plan: WorkerPlan, *, workers: int, use_gpu: bool, place: RunPlace, num_to_keep: int, max_failures: int,
                resources_per_worker: dict[str, float] | None = None, callbacks: tuple = (), context_options: dict | None = None):
    """Launch a TorchTrainer over ``ray_train_loop`` and wait for it; Ray keeps the
    ``num_to_keep`` best checkpoints by the plan's selection metric. A crash starts it
    again, up to ``max_failures`` times; a ``DeterministicError`` is raised at once
    (``fit_with_restarts``).

    A search trial passes its workers' share of CPUs (``resources_per_worker``), Tune's
    ``TuneReportCallback`` (``callbacks``) and the workers' ``RayTrainContext`` options.
    """
    import ray
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from jingle.pipelines.ray_contexts import ray_train_loop

    shared = {name: [ray.put(value)] for name, value in plan.task_plan.shared.items()}  # in a list: Ray leaves it a reference
    streamed = not plan.data.in_memory
    # A worker's report waits for the controller to take its previous one, and the
    # controller looks every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (Ray's default 2 s): epochs
    # shorter than that waited ~1 s each at their report (the demo's pointer network: 20 of
    # its 60 s). The trainer passes the variable on to its controller; a user's value wins.
    os.environ.setdefault(HEALTH_CHECK_INTERVAL_VARIABLE, HEALTH_CHECK_INTERVAL_SECONDS)
    resources = resources_per_worker or worker_resources(workers, use_gpu, streamed=streamed)

    def fit():  # a new trainer each time: the same run (name, storage) continues from its latest checkpoint
        trainer = TorchTrainer(
            ray_train_loop,
            train_loop_config={"plan": plan.with_shared({}), "shared": shared, "context": context_options or {}},
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources),
            run_config=RunConfig(
                name=place.name,
                **ray_storage(place.storage),
                checkpoint_config=CheckpointConfig(
                    num_to_keep=num_to_keep,
                    checkpoint_score_attribute=plan.loop.selection.metric,
                    checkpoint_score_order=plan.loop.selection.mode,
                ),
                failure_config=FailureConfig(max_failures=0),  # restarts are fit_with_restarts' to decide
                callbacks=list(callbacks) or None,
            ),
            datasets=plan.data.ray_datasets() if streamed else None,
            # Only the training data is split: an equal split of a small validation set can
            # leave a worker nothing, so every worker reads all of it (same metric on every rank).
            dataset_config=DataConfig(datasets_to_split=["train"]),
        )
        return trainer.fit()

    return fit_with_restarts(fit, max_failures=max_failures)


def run(spec: TrainSpec) -> TrainSummary:
    """A whole training run, as ``jingle train TASK`` does it."""
    import time

    started = time.perf_counter()
    task = get_task(spec.task)
    config = spec.load_config()
    check_writable(spec.storage, "--storage")  # a read-only folder or a missing bucket is refused before any work
    training = config.training
    data = ShardData.open(spec.data, kind=task.shard_kind or task.name)
    validation = ShardData.open(spec.validation, kind=task.shard_kind or task.name, flag="--validation") if spec.validation else None
    train_ids, validation_ids = data.split(training.validation_fraction, training.seed, validation=validation)
    init_ray(spec.num_cpus, debug=spec.debug)
    workers = count_workers(spec.workers, spec.use_gpu)
    task_plan = task.plan(config, data, train_ids=train_ids, workers=workers, options=spec.task_options)
    place = place_run(spec, codec_id=task_plan.codec["id"])
    tracking = open_tracking_run(
        storage=place.storage, experiment=f"jingle-{task.name}", run_name=place.name,
        params={"config": config.to_dict(), "data": data.root, "workers": workers},
    )
    # Rank 0 logs into the run; the driver, which knows how the training ended, ends it:
    # FINISHED, FAILED (an exception here, in fit() or in the summary) or KILLED (Ctrl-C, SIGTERM).
    with ending_tracking_run(tracking):
        plan = worker_plan(task, config, data, train_ids=train_ids, validation_ids=validation_ids, validation=validation,
                           task_plan=task_plan, run_dir=place.run_dir, tracking=tracking)
        result = run_trainer(plan, workers=workers, use_gpu=spec.use_gpu, place=place, num_to_keep=training.num_to_keep,
                             max_failures=training.max_failures)
        return summarize(result, task=task, place=place, has_validation=bool(validation_ids), tracking_uri=tracking.uri,
                         run_id=tracking.run_id, seconds=time.perf_counter() - started)


def summarize(result: Any, *, task: Task, place: RunPlace, has_validation: bool, tracking_uri: str, run_id: str, seconds: float) -> TrainSummary:
    """A finished ``trainer.fit()`` -> the summary printed to the user."""
    if result.error is not None:
        raise RuntimeError(f"training failed: {result.error}")
    # without validation data, or with the score turned off (its metric then reads -inf
    # every epoch), no checkpoint is better than another: the latest is the one to use
    ranked = has_validation and math.isfinite((result.metrics or {}).get(task.selection.metric, math.nan))
    best = result.get_best_checkpoint(task.selection.metric, task.selection.mode) if ranked else result.checkpoint
    latest = result.checkpoint
    final = load_state(checkpoint_uri(latest.path, place.storage), kind=task.name) if latest else None
    return TrainSummary(
        run_dir=str(place.run_dir),
        best_checkpoint=checkpoint_uri(best.path, place.storage) if best else None,
        latest_checkpoint=checkpoint_uri(latest.path, place.storage) if latest else None,
        step=final.step if final else 0,
        epoch=final.epoch if final else 0,
        metrics=result.metrics or {},
        tracking_uri=tracking_uri,
        run_id=run_id,
        shown_metrics=task.shown_metrics,
        seconds=seconds,
    )


def entry_point(task_name: str, doc: str) -> EntryPoint:
    """The ``jingle train TASK`` command (and ``python -m pipelines.train_TASK``)."""
    return EntryPoint(f"jingle train {task_name}", doc, partial(add_train_arguments, task=get_task(task_name)),
                      reporting(lambda args: run(TrainSpec.from_args(task_name, args))))
