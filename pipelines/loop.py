"""The one epoch loop every training runs, and the run context it talks to. No Ray here.

A training worker is the loop over a *task* (``pipelines/tasks``: what differs per model)
inside a *run context*: where it runs and how it reports. Three contexts exist:

- ``RayTrainContext`` (``pipelines/ray_contexts.py``): a worker of a ``TorchTrainer``;
- ``TuneTrialContext`` (same file): a Tune trial running the loop in its own process;
- ``LocalContext`` (below): in this process, for tests and plain scripts.

Resume: a context's ``load_latest`` is the last state it was given by ``report``;
the step counter travels in it, and a run resumed mid-epoch takes only the steps the epoch
has left, so the counter ends where a clean run's does.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import torch

from jingle.core.config import fail
from jingle.core.storage import Location
from jingle.training.checkpoints import TrainingState, load_state, save_state

VALIDATION_METRIC = "val_total"  # reported by every task; not necessarily what picks checkpoints


@dataclass(frozen=True)
class Selection:
    """The held-out metric that picks the best checkpoint (and that a search ranks by).

    Each task names its own: the fusion model's fixed arrangement score (``val_score``,
    higher is better), not its loss, whose weights a search changes; the pointer
    network's ``val_accuracy_within_2``.
    """

    metric: str = VALIDATION_METRIC
    mode: str = "min"

    def __post_init__(self) -> None:
        if self.mode not in ("min", "max"):
            fail("selection", f"mode must be 'min' or 'max', got {self.mode!r}")

    @property
    def worst(self) -> float:
        return math.inf if self.mode == "min" else -math.inf

    def best(self, a: float, b: float) -> float:
        return min(a, b) if self.mode == "min" else max(a, b)


@dataclass(frozen=True)
class LoopSettings:
    """What the loop needs to know about the run (the same on every worker).

    Attributes:
        epochs: epochs of the whole run (a resumed run stops at the same one).
        steps_per_epoch: steps every worker takes per epoch (equal on all ranks, so that
            DDP's collective calls match).
        checkpoint_every_steps: also checkpoint every N steps (0: once per epoch only).
        fail_at_step: fault injection: the last worker fails once at this step.
        run_dir: the run's folder (the fault-injection marker lives there).
        selection: the held-out metric that ranks checkpoints (the task's).
    """

    epochs: int
    steps_per_epoch: int
    checkpoint_every_steps: int = 0
    fail_at_step: int | None = None
    run_dir: str = ""
    selection: Selection = Selection()


class RunContext(Protocol):
    """Where a training worker runs: its place in the group and where its results go."""

    rank: int
    world_size: int
    local_world_size: int
    device: torch.device

    def load_latest(self, *, kind: str, codec_id: str | None) -> TrainingState | None:
        """The latest state this run reported (after a failure or a rerun), or None. A
        state of another kind or codec is refused (``CheckpointError``)."""

    def report(self, metrics: dict[str, float], state: TrainingState | None) -> None:
        """Every worker calls this equally often; rank 0 passes the state to checkpoint."""

    def should_stop(self) -> bool:
        """Whether the run was asked to end early (a scheduler, a test)."""

    def fail(self, message: str) -> None:
        """Fault injection: end this worker the way a crash would."""

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model as the context trains it (DDP-wrapped across workers, or itself)."""

    def stream(self, name: str) -> Any:
        """This worker's Ray Data iterator of dataset ``name`` (streamed training data)."""


class InjectedFault(RuntimeError):
    """Raised by ``LocalContext.fail``: a test's stand-in for a crashed worker."""


@dataclass
class LoopState:
    """Where a worker's training stands; restored from a checkpoint on resume."""

    step: int = 0
    epoch: int = 0  # epochs completed
    best_validation: float | None = None  # of the selection metric; None before any
    step_seconds: float = 0.0  # in training steps, since this process started the loop


@dataclass
class EpochTiming:
    """Seconds of one epoch: all of it, and the part spent in training steps. An epoch
    runs from the start of the previous epoch's report (its checkpoint is written and
    handed over then) to the start of its own, so that reporting counts too."""

    started: float = field(default_factory=time.perf_counter)
    in_steps: float = 0.0

    def metrics(self) -> dict[str, float]:
        total = time.perf_counter() - self.started
        return {"epoch_seconds": total, "step_seconds": self.in_steps, "overhead_seconds": max(0.0, total - self.in_steps)}


def maybe_fail(context: RunContext, settings: LoopSettings, step: int) -> None:
    """Fault injection: the last worker fails once when it reaches ``fail_at_step``; a
    marker file in the run's folder makes it happen once, so the restarted worker group
    carries on from the last checkpoint."""
    if settings.fail_at_step is None or step != settings.fail_at_step or context.rank != context.world_size - 1:
        return
    marker = Location.of(settings.run_dir) / f".fault-injected-at-{settings.fail_at_step}"
    if marker.exists():
        return
    marker.write_text("the worker failed here on purpose (training.fail_at_step)\n")
    context.fail(f"fault injected at step {step} (training.fail_at_step)")


def run_epochs(
    *,
    context: RunContext,
    settings: LoopSettings,
    state: LoopState,
    epoch_batches: Callable[[int], Iterable[Any]],
    train_step: Callable[[Any], dict[str, float]],
    validate: Callable[[], dict[str, float]],
    checkpoint: Callable[[int], TrainingState | None],
    log_metrics: Callable[[dict[str, float], int], None] = lambda metrics, step: None,
    setup_seconds: float | None = None,
) -> None:
    """The worker's epochs, the same for every model: steps, checkpoints, validation, reports.

    Args:
        context: where the worker runs and reports.
        settings: epochs, steps per epoch, checkpoint cadence, fault injection.
        state: step counter, epochs done and best validation; updated in place.
        epoch_batches: epoch -> this worker's training batches.
        train_step: one optimisation step on a batch -> its metrics.
        validate: validation metrics (``val_*``; empty without validation data).
        checkpoint: epochs completed -> the state to save (rank 0), None on other ranks.
        log_metrics: (epoch metrics, step) -> None, e.g. MLflow from rank 0.
        setup_seconds: the worker's time before the loop (model, data, restore), reported
            with the first epoch.

    Every epoch's report carries the mean training metrics, the validation metrics,
    ``step``, ``epoch`` and its timing (``epoch_seconds``, ``step_seconds``,
    ``overhead_seconds``: what the epoch spent outside training steps: data, validation,
    and the previous epoch's report and checkpoint; ``run_step_seconds``: time in steps
    since this process began the loop).
    """
    timing = EpochTiming()
    selection = settings.selection
    if state.best_validation is None:
        state.best_validation = selection.worst
    for epoch in range(state.epoch, settings.epochs):
        if context.should_stop():
            return
        epoch_end = (epoch + 1) * settings.steps_per_epoch
        sums: dict[str, float] = {}
        taken = 0
        for batch in epoch_batches(epoch):
            if state.step >= epoch_end:
                break
            maybe_fail(context, settings, state.step + 1)
            started = time.perf_counter()
            metrics = train_step(batch)
            timing.in_steps += time.perf_counter() - started
            state.step += 1
            taken += 1
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + value
            every = settings.checkpoint_every_steps
            if every and state.step % every == 0 and state.step < epoch_end:
                context.report({"step": state.step, "epoch": epoch, selection.metric: state.best_validation}, checkpoint(epoch))
        if state.step < epoch_end:
            raise RuntimeError(f"worker {context.rank} ran out of training batches at step {state.step} of {epoch_end}")
        train_means = {key: value / max(1, taken) for key, value in sums.items()}
        validation = validate()
        if selection.metric in validation:
            state.best_validation = selection.best(state.best_validation, validation[selection.metric])
        state.epoch = epoch + 1
        state.step_seconds += timing.in_steps
        epoch_metrics = {**train_means, **validation, "step": state.step, "epoch": epoch + 1, **timing.metrics(),
                         "run_step_seconds": state.step_seconds}
        if setup_seconds is not None:
            epoch_metrics["setup_seconds"], setup_seconds = setup_seconds, None
        log_metrics(epoch_metrics, state.step)
        if selection.metric not in epoch_metrics:
            # no held-out data: a loss-ranked run ranks by the training loss, a
            # score-ranked one cannot rank (the driver then keeps the latest checkpoint)
            fallback = train_means.get("total", math.inf) if selection.metric == VALIDATION_METRIC else selection.worst
            epoch_metrics[selection.metric] = fallback
        timing = EpochTiming()
        context.report(epoch_metrics, checkpoint(epoch + 1))


# ------------------------------------------------------------- the local context


class LocalContext:
    """One worker in this process: checkpoints in a folder, reports kept in a list.

    Args:
        checkpoint_dir: where reported states go (``checkpoint_<n>/``); a new context on
            the same folder resumes from the latest one, as a rerun of a Ray run does.
        stop_after_reports: ``should_stop`` turns true after this many reports (tests).
    """

    rank = 0
    world_size = 1
    local_world_size = 1

    def __init__(self, checkpoint_dir: str | os.PathLike | None = None, *, device: str = "cpu", stop_after_reports: int | None = None) -> None:
        self.checkpoint_dir = Path(checkpoint_dir or tempfile.mkdtemp(prefix="jingle-local-"))
        self.device = torch.device(device)
        self.reports: list[dict[str, float]] = []
        self.stop_after_reports = stop_after_reports

    def _checkpoints(self) -> list[Path]:
        return sorted(self.checkpoint_dir.glob("checkpoint_*"), key=lambda path: int(path.name.split("_")[1]))

    def load_latest(self, *, kind: str, codec_id: str | None) -> TrainingState | None:
        found = self._checkpoints()
        return load_state(found[-1], kind=kind, codec_id=codec_id) if found else None

    def report(self, metrics: dict[str, float], state: TrainingState | None) -> None:
        self.reports.append(dict(metrics))
        if state is not None:
            found = self._checkpoints()
            number = int(found[-1].name.split("_")[1]) + 1 if found else 0
            save_state(self.checkpoint_dir / f"checkpoint_{number:06d}", state)

    def should_stop(self) -> bool:
        return self.stop_after_reports is not None and len(self.reports) >= self.stop_after_reports

    def fail(self, message: str) -> None:
        raise InjectedFault(message)

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device)

    def stream(self, name: str) -> Any:
        raise RuntimeError("a LocalContext has no Ray Data streams: the rows are read into memory")
