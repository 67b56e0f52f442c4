"""One training worker, the same for every model: a task's model and batches inside the
loop, with the optimiser, schedule, checkpoints, resume, data and MLflow everyone shares.

``train_worker(context, plan)`` runs under any run context (``pipelines/loop.py``): a Ray
Train worker, a Tune trial in its own process, or a test in this one. No Ray here.
``deterministic_errors_marked(plan)`` around it tells an error a restart would meet again
(bad data, a bad config value, a bug) from a crash, for the driver's restarts.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import torch

from jingle.core.storage import Location
from jingle.datasets.shards import read_manifest, shard_problem
from jingle.training.checkpoints import TrainingState
from jingle.training.optimization import build_optimizer, build_scheduler, unwrap
from jingle.pipelines.common import USER_ERRORS, DeterministicError, DeterministicInputError, UsageError, error_chain
from jingle.pipelines.loop import VALIDATION_METRIC, LoopSettings, LoopState, RunContext, run_epochs
from jingle.pipelines.shard_data import DataPlan
from jingle.pipelines.registry import load_task
from jingle.pipelines.tasks import TaskPlan, get_task
from jingle.pipelines.tracking import Tracker, TrackingRun


@dataclass(frozen=True)
class WorkerPlan:
    """Everything a worker needs, from the driver (pickled to every worker).

    Attributes:
        task: the task's name (``pipelines/tasks``; a model's name in ``pipelines/registry.py``).
        config: the resolved config as a dict (the task's config class rebuilds it).
        task_plan: the task's own plan (steps per epoch, codec, payload).
        data: what the worker reads.
        loop: the loop's settings.
        tracking: the MLflow run rank 0 logs to (None: no logging from workers).
    """

    task: str
    config: dict
    task_plan: TaskPlan
    data: DataPlan
    loop: LoopSettings
    tracking: TrackingRun | None = None
    task_reference: str = ""  # "module:Class" of the task (registry.task_reference); empty: by name

    def with_shared(self, shared: dict[str, Any]) -> "WorkerPlan":
        return replace(self, task_plan=replace(self.task_plan, shared=shared))


def worker_torch_threads(local_world_size: int) -> int:
    """Torch threads of a CPU training worker: the node's cores shared among its workers.

    Ray sets a worker's OMP_NUM_THREADS to its whole logical CPUs (one here, since workers
    leave room for Ray Data's reads), which would leave a lone worker on one core.
    """
    return max(1, (os.cpu_count() or 1) // max(1, local_world_size))


def train_worker(context: RunContext, plan: WorkerPlan) -> LoopState:
    """Train under ``context`` until the plan's last epoch (or an early stop); returns
    where the training stands."""
    started = time.perf_counter()
    task = load_task(plan.task_reference) if plan.task_reference else get_task(plan.task)
    config = task.config_class.from_dict(plan.config)
    training = config.training
    if context.device.type == "cpu":
        torch.set_num_threads(worker_torch_threads(context.local_world_size))
    torch.manual_seed(training.seed)  # identical initial weights on every worker
    worker = task.worker(config, plan.task_plan, context.device)
    optimizer = build_optimizer(worker.model, training)
    scheduler = build_scheduler(optimizer, training, total_steps=plan.loop.steps_per_epoch * training.epochs)
    loop = LoopState()
    state = context.load_latest(kind=task.name, codec_id=plan.task_plan.codec["id"])
    if state is not None:
        worker.model.load_state_dict(state.model)
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        worker.load_extra_state(state.task_state)
        # the best so far counts only if it was of the metric this run selects by
        same_metric = state.extra.get("selection_metric", VALIDATION_METRIC) == plan.loop.selection.metric
        loop = LoopState(state.step, state.epoch, state.extra.get("best_validation") if same_metric else None)
    model = context.prepare_model(worker.model)
    train_rows, validation_rows = plan.data.rows(context, seed=training.seed)
    tracker = Tracker(plan.tracking) if plan.tracking is not None and context.rank == 0 else None

    def checkpoint(epoch: int) -> TrainingState | None:
        if context.rank != 0:
            return None
        return TrainingState(
            kind=task.name,
            model=unwrap(model).state_dict(),
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
            step=loop.step,
            epoch=epoch,
            config=config.to_dict(),
            codec=plan.task_plan.codec,
            data={**plan.data.describe(), **plan.task_plan.recorded},
            extra={"best_validation": loop.best_validation, "selection_metric": plan.loop.selection.metric, "mlflow_run_id": plan.tracking.run_id if plan.tracking else None},
            task_state=worker.extra_state(),
        )

    run_epochs(
        context=context,
        settings=plan.loop,
        state=loop,
        epoch_batches=lambda epoch: worker.batches(train_rows, epoch=epoch, rank=context.rank, step=loop.step),
        train_step=lambda batch: worker.step(model, batch, optimizer, scheduler),
        validate=lambda: worker.validate(model, validation_rows) if validation_rows is not None else {},
        checkpoint=checkpoint,
        log_metrics=tracker.metrics if tracker else lambda metrics, step: None,
        setup_seconds=time.perf_counter() - started,
    )
    if tracker is not None:
        with tempfile.TemporaryDirectory() as folder:
            folder = Path(folder)
            (folder / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
            for path in [folder / "config.json", *worker.artifacts(model, folder)]:
                tracker.artifact(path)
    return loop


# ------------------------------------------------------- errors a restart would meet again

# Bad data or a bad value: the project's own user errors, and any other ValueError (a value
# out of range; pyarrow's ArrowInvalid for a file that is no Parquet).
INPUT_ERRORS = (ValueError, UsageError, *USER_ERRORS)
# Bugs: the same code on the same data fails the same way.
BUG_ERRORS = (TypeError, LookupError, AttributeError, NameError, AssertionError, NotImplementedError, ArithmeticError, ImportError)
# Everything else is taken for a fault a restart may cure and is retried: a RuntimeError (a
# collective broken by a dead peer, a CUDA fault; torch's shape errors too, which it cannot
# be told apart from), an OSError (storage, network) unless a shard is found damaged, a Ray
# error, MemoryError.


def one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def damaged_shard(data: DataPlan, *, kind: str) -> str | None:
    """The first shard of the plan whose content does not match its manifest (sha256, a full
    read), as a one-line error, or None. The driver checked only existence and size."""
    for flag, root in (("--data", data.root), ("--validation", data.validation_root)):
        if not root:
            continue
        manifest = read_manifest(root)
        for name, entry in sorted(manifest["files"].items()):
            problem = shard_problem(Location.of(root) / manifest["shard_dir"] / name, entry, verify=True)
            if problem is not None:
                return (f"{flag} {root}: shard {manifest['shard_dir']}/{name} {problem}; rerun jingle preprocess {kind} "
                        f"with the same --pairs and --out (it makes that shard's rows again)")
    return None


def deterministic_error(error: BaseException, plan: WorkerPlan) -> DeterministicError | None:
    """``error`` as the ``DeterministicError`` a restart would raise again, or None for a
    fault worth a restart.

    An unreadable file (an ``OSError`` or pyarrow error, read by this worker or by a Ray
    Data task for it) counts when a shard of the plan fails its manifest's sha256; the line
    then names that shard. A project error keeps its message; another one is prefixed by
    its type (``ArrowInvalid: ...``, ``TypeError: ...``).
    """
    if isinstance(error, DeterministicError):
        return error
    chain = error_chain(error)
    unreadable = any(type(cause).__module__.startswith("pyarrow") or isinstance(cause, OSError) for cause in chain) or any(
        "parquet" in f"{cause}{getattr(cause, 'traceback_str', '')}".lower() for cause in chain  # Ray Data's wrapped errors
    )
    if unreadable:
        try:
            problem = damaged_shard(plan.data, kind=plan.task)
        except Exception:  # the check could not run (storage unreachable): judge the error itself
            problem = None
        if problem is not None:
            return DeterministicInputError(problem)
    # A Ray task's error is also an instance of its cause's class; its own text is a traceback.
    original = error.cause if isinstance(getattr(error, "cause", None), BaseException) else error
    message = one_line(str(original))
    named = f"{type(original).__name__}: {message}" if message else type(original).__name__
    if isinstance(error, (UsageError, *USER_ERRORS)):
        return DeterministicInputError(message or named)
    if isinstance(error, INPUT_ERRORS):
        return DeterministicInputError(named)
    if isinstance(error, BUG_ERRORS):
        return DeterministicError(named)
    return None


@contextmanager
def deterministic_errors_marked(plan: WorkerPlan) -> Iterator[None]:
    """Raise an error that a restart would meet again as a ``DeterministicError`` (see
    ``deterministic_error``), from the original; let any other pass unchanged."""
    try:
        yield
    except Exception as error:
        marked = deterministic_error(error, plan)
        if marked is None or marked is error:
            raise
        raise marked from error
