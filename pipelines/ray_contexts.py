"""The run contexts backed by Ray: a Ray Train worker, and a Tune trial that runs the loop
in its own process. Both run ``pipelines.worker.train_worker`` unchanged.
"""

from __future__ import annotations

import json
import math
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.tune
import torch

from models.checkpoints import TrainingState, load_state, save_state
from pipelines.worker import WorkerPlan, train_worker


class _RayReporting:
    """Checkpoints and reports through a Ray library (``ray.train`` or ``ray.tune``: the
    same calls, each valid only in its own kind of process)."""

    library: Any

    def load_latest(self, *, kind: str, codec_id: str | None) -> TrainingState | None:
        checkpoint = self.library.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as directory:
            return load_state(directory, kind=kind, codec_id=codec_id)

    def report(self, metrics: dict[str, float], state: TrainingState | None) -> None:
        if state is None:
            self.library.report(metrics)
            return
        with tempfile.TemporaryDirectory() as directory:
            save_state(directory, state)
            self.library.report(metrics, checkpoint=self.library.Checkpoint.from_directory(directory))


class RayTrainContext(_RayReporting):
    """A worker of a ``TorchTrainer``: DDP across the group, checkpoints in the run's storage."""

    library = ray.train

    def __init__(self) -> None:
        import ray.train.torch

        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        self.local_world_size = context.get_local_world_size()
        self.device = ray.train.torch.get_device()

    def should_stop(self) -> bool:
        return False

    def fail(self, message: str) -> None:
        os._exit(1)  # as a crashed worker would: Ray Train restarts the group (max_failures)

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def stream(self, name: str) -> Any:
        return ray.train.get_dataset_shard(name)

    def record(self, run_dir: str) -> None:
        """Write ``RUN/workers/rank-N.json`` (node id, host, pid): where each worker ran."""
        folder = Path(run_dir) / "workers"
        folder.mkdir(parents=True, exist_ok=True)
        info = {"rank": self.rank, "node_id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(), "pid": os.getpid()}
        (folder / f"rank-{self.rank}.json").write_text(json.dumps(info))


def ray_train_loop(loop_config: dict) -> None:
    """The TorchTrainer's per-worker function: the plan, its shared values fetched once."""
    plan: WorkerPlan = loop_config["plan"]
    plan = plan.with_shared({name: ray.get(refs[0]) for name, refs in loop_config["shared"].items()})
    context = RayTrainContext()
    context.record(plan.loop.run_dir)
    train_worker(context, plan)


class TuneTrialContext(_RayReporting):
    """A Tune trial running the loop in its own process: one worker, reports to Tune.

    Args:
        datasets: Ray Datasets by name, for a plan whose data is streamed.
        device: where the trial trains.
        trials_per_node: trials that share this node's cores (torch threads are divided).
        selection: with ``diverged``, the metric Tune ranks trials by: a NaN or infinite
            value is reported as the worst finite ``diverged`` instead, since ASHA never
            stops a NaN trial.
    """

    library = ray.tune
    rank = 0
    world_size = 1

    def __init__(self, datasets: dict[str, Any] | None = None, device: str = "cpu", *, trials_per_node: int = 1,
                 selection: Any = None, diverged: float | None = None) -> None:
        self.datasets = datasets or {}
        self.device = torch.device(device)
        self.local_world_size = max(1, trials_per_node)
        self.selection, self.diverged = selection, diverged

    def report(self, metrics: dict[str, float], state: TrainingState | None) -> None:
        if self.selection is not None and self.diverged is not None:
            value = metrics.get(self.selection.metric)
            if value is not None and not math.isfinite(value):
                worst = -self.diverged if self.selection.mode == "max" else self.diverged
                metrics = {**metrics, self.selection.metric: worst, "diverged": 1.0}
        super().report(metrics, state)

    def should_stop(self) -> bool:
        return False  # a trial the scheduler stops is ended by Tune at its next report

    def fail(self, message: str) -> None:
        raise RuntimeError(message)  # the trial errors; Tune retries it (FailureConfig)

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device)

    def stream(self, name: str) -> Any:
        return self.datasets[name].iterator()


def tune_trial(plan: WorkerPlan, datasets: dict[str, Any] | None = None, *, trials_per_node: int = 1,
               diverged: float | None = None) -> None:
    """Run a training plan as the body of a Tune function trial (in the trial's process)."""
    context = TuneTrialContext(datasets, trials_per_node=trials_per_node, selection=plan.loop.selection, diverged=diverged)
    train_worker(context, plan)
