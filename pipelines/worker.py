"""One training worker, the same for every model: a task's model and batches inside the
loop, with the optimiser, schedule, checkpoints, resume, data and MLflow everyone shares.

``train_worker(context, plan)`` runs under any run context (``pipelines/loop.py``): a Ray
Train worker, a Tune trial in its own process, or a test in this one. No Ray here.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from models.checkpoints import TrainingState
from models.optimization import build_optimizer, build_scheduler, unwrap
from pipelines.loop import VALIDATION_METRIC, LoopSettings, LoopState, RunContext, run_epochs
from pipelines.shard_data import DataPlan
from pipelines.tasks import TaskPlan, get_task
from pipelines.tracking import Tracker, TrackingRun


@dataclass(frozen=True)
class WorkerPlan:
    """Everything a worker needs, from the driver (pickled to every worker).

    Attributes:
        task: the task's name (``pipelines/tasks``).
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
    task = get_task(plan.task)
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
        worker.load_extra_state(state)
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
            **worker.extra_state(),
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
