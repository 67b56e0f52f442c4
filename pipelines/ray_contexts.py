"""The run contexts backed by Ray: a Ray Train worker, and a Tune trial that runs the loop
in its own process. Both run ``pipelines.worker.train_worker`` unchanged, and raise an error
a restart would meet again as a ``DeterministicError`` (``pipelines.worker``): the driver's
restarts (``pipelines.train.fit_with_restarts``) are for crashes only.
"""

from __future__ import annotations

import json
import math
import os
import socket
import tempfile
from typing import Any

import ray
import ray.train
import ray.tune
import torch

from jingle.core.storage import Location
from jingle.training.checkpoints import TrainingState, load_state, save_state
from jingle.pipelines.worker import WorkerPlan, deterministic_errors_marked, train_worker


# The result key under which a trainer in a search trial names its workers' placement group.
PLACEMENT_GROUP_KEY = "trainer_placement_group"


class _RayReporting:
    """Checkpoints and reports through a Ray library (``ray.train`` or ``ray.tune``: the
    same calls, each valid only in its own kind of process).

    With ``selection`` and ``diverged`` set (a search), a NaN or infinite selection metric
    is reported as the worst finite ``diverged`` instead, since ASHA never stops a NaN trial.
    """

    library: Any
    selection: Any = None
    diverged: float | None = None

    def finite(self, metrics: dict[str, float]) -> dict[str, float]:
        if self.selection is None or self.diverged is None:
            return metrics
        value = metrics.get(self.selection.metric)
        if value is None or math.isfinite(value):
            return metrics
        worst = -self.diverged if self.selection.mode == "max" else self.diverged
        return {**metrics, self.selection.metric: worst, "diverged": 1.0}

    def load_latest(self, *, kind: str, codec_id: str | None) -> TrainingState | None:
        checkpoint = self.library.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as directory:
            return load_state(directory, kind=kind, codec_id=codec_id)

    def report(self, metrics: dict[str, float], state: TrainingState | None) -> None:
        metrics = self.finite(metrics)
        if state is None:
            self.library.report(metrics)
            return
        with tempfile.TemporaryDirectory() as directory:
            save_state(directory, state)
            self.library.report(metrics, checkpoint=self.library.Checkpoint.from_directory(directory))


class RayTrainContext(_RayReporting):
    """A worker of a ``TorchTrainer``: DDP across the group, checkpoints in the run's storage.

    Args:
        node_workers: training workers sharing this node's cores (torch threads are
            divided among them); default: this run's workers on the node. A search runs
            several trainers side by side and says how many workers a node holds in all.
        selection, diverged: see ``_RayReporting`` (a trainer inside a search trial).
        report_placement_group: rank 0 adds its worker group's placement group id to every
            report (``PLACEMENT_GROUP_KEY``), so the search's driver can free it when Tune
            stops the trial (see ``pipelines.tune_callbacks.trainer_cleanup``).
    """

    library = ray.train

    def __init__(self, *, node_workers: int | None = None, selection: Any = None, diverged: float | None = None,
                 report_placement_group: bool = False) -> None:
        import ray.train.torch

        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        self.local_world_size = node_workers or context.get_local_world_size()
        self.device = ray.train.torch.get_device()
        self.selection, self.diverged = selection, diverged
        group = ray.util.get_current_placement_group() if report_placement_group and self.rank == 0 else None
        self.tags = {PLACEMENT_GROUP_KEY: group.id.hex()} if group is not None else {}

    def report(self, metrics: dict[str, float], state: TrainingState | None) -> None:
        super().report({**metrics, **self.tags}, state)

    def should_stop(self) -> bool:
        return False

    def fail(self, message: str) -> None:
        os._exit(1)  # as a crashed worker would: the driver starts the group again (max_failures)

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def stream(self, name: str) -> Any:
        return ray.train.get_dataset_shard(name)

    def record(self, run_dir: str) -> None:
        """Write ``RUN/workers/rank-N.json`` (node id, host, pid): where each worker ran, and
        ``starts``: how often this rank has started in this run (restarts and resumes count)."""
        path = Location.of(run_dir) / "workers" / f"rank-{self.rank}.json"
        try:
            starts = int(json.loads(path.read_text()).get("starts", 1)) + 1
        except (OSError, ValueError, AttributeError):  # the first start (or an unreadable record)
            starts = 1
        info = {"rank": self.rank, "node_id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(), "pid": os.getpid(),
                "starts": starts}
        path.write_text(json.dumps(info))


def ray_train_loop(loop_config: dict) -> None:
    """The TorchTrainer's per-worker function: the plan, its shared values fetched once,
    and the context's options (``run_trainer``'s ``context_options``)."""
    plan: WorkerPlan = loop_config["plan"]
    with deterministic_errors_marked(plan):
        plan = plan.with_shared({name: ray.get(refs[0]) for name, refs in loop_config["shared"].items()})
        context = RayTrainContext(**loop_config.get("context", {}))
        context.record(plan.loop.run_dir)
        train_worker(context, plan)


class TuneTrialContext(_RayReporting):
    """A Tune trial running the loop in its own process: one worker, reports to Tune.

    Args:
        datasets: Ray Datasets by name, for a plan whose data is streamed.
        device: where the trial trains.
        trials_per_node: trials that share this node's cores (torch threads are divided).
        selection, diverged: see ``_RayReporting``.
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

    def should_stop(self) -> bool:
        return False  # a trial the scheduler stops is ended by Tune at its next report

    def fail(self, message: str) -> None:
        raise RuntimeError(message)  # the trial errors (a search's Tune FailureConfig retries no trial)

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device)

    def stream(self, name: str) -> Any:
        return self.datasets[name].iterator()


def tune_trial(plan: WorkerPlan, datasets: dict[str, Any] | None = None, *, trials_per_node: int = 1,
               diverged: float | None = None) -> None:
    """Run a training plan as the body of a Tune function trial (in the trial's process)."""
    context = TuneTrialContext(datasets, trials_per_node=trials_per_node, selection=plan.loop.selection, diverged=diverged)
    with deterministic_errors_marked(plan):  # the trial's error: one line naming the cause
        train_worker(context, plan)
