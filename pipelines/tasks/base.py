"""What a model's training task states: only what differs between models.

- the columns it reads and its config class;
- ``plan`` (driver side): checks the config against the shards and works out the steps per
  epoch and what workers need (a codec, its weights);
- ``build_model``: the model from its config (also what a checkpoint loader rebuilds);
- ``worker`` (worker side): a ``TaskWorker`` holding the model and its objective, which
  turns rows into batches, a batch into a step, and validates; extra checkpoint state;
  artifacts for MLflow.

Everything else (the loop, optimiser and schedule, checkpoints, resume, fault injection,
data reading, reporting, MLflow) is ``pipelines/worker.py``'s and the same for every task.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from jingle.core.config import SectionedConfig
from jingle.datasets.shard_rows import Rows
from jingle.pipelines.loop import Selection


@dataclass(frozen=True)
class TaskPlan:
    """What the driver worked out for the workers (plain values, pickled to them).

    Attributes:
        steps_per_epoch: steps every worker takes per epoch.
        codec: what the latents or features were made with, recorded in checkpoints (its
            ``id`` is checked on resume and by inference).
        payload: small task-specific values for the workers.
        shared: large values (e.g. codec weights) that a Ray run ships once through the
            object store.
        recorded: what checkpoints record about the data beyond the shards and the split
            (e.g. the fusion segment length, which inference chunks by).
    """

    steps_per_epoch: int
    codec: dict
    payload: dict = field(default_factory=dict)
    shared: dict = field(default_factory=dict)
    recorded: dict = field(default_factory=dict)


class TaskWorker:
    """A task's model-specific state inside one worker.

    Attributes:
        model: the model (unwrapped; the context may wrap it for DDP).
    """

    model: nn.Module

    def batches(self, rows: Rows, *, epoch: int, rank: int, step: int) -> Iterator[Any]:
        """One epoch of training batches from this worker's rows (``step``: where the run
        stands, so a resumed run draws what a clean one would)."""
        raise NotImplementedError

    def step(self, model: nn.Module, batch: Any, optimizer: torch.optim.Optimizer, scheduler: Any) -> dict[str, float]:
        """One optimisation step -> its metrics."""
        raise NotImplementedError

    def validate(self, model: nn.Module, rows: Rows) -> dict[str, float]:
        """Held-out metrics, named ``val_*`` (``val_total`` among them)."""
        raise NotImplementedError

    def extra_state(self) -> dict[str, Any]:
        """The task's own training state beyond model, optimiser and schedule (e.g. a
        discriminator), kept in the checkpoint's ``task_state``."""
        return {}

    def load_extra_state(self, saved: dict[str, Any]) -> None:
        """Restore what ``extra_state`` saved (a resumed run's ``TrainingState.task_state``)."""

    def artifacts(self, model: nn.Module, folder: Path) -> list[Path]:
        """Files for MLflow after training (a picture of a held-out example...)."""
        return []


class Task:
    """A model's training task (subclasses set the class attributes)."""

    name: ClassVar[str]
    config_class: ClassVar[type[SectionedConfig]]
    columns: ClassVar[tuple[str, ...]]
    # the ``jingle preprocess`` output it trains on (None: its own name's)
    shard_kind: ClassVar[str | None] = None
    # metrics the command's summary prints
    shown_metrics: ClassVar[tuple[str, ...]] = ("total", "val_total")
    # the held-out metric that picks the best checkpoint and ranks search trials
    selection: ClassVar[Selection] = Selection()

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Flags of this task's ``jingle train`` beyond the shared ones."""

    def data_columns(self, config: SectionedConfig) -> tuple[str, ...]:
        """The shard columns a training with ``config`` reads (default: ``columns``)."""
        return self.columns

    def plan(self, config: SectionedConfig, data: Any, *, train_ids: list[str], workers: int, options: Mapping[str, Any]) -> TaskPlan:
        """Check ``config`` against the shards and work out the workers' plan; ``options``: the
        task's own settings (``TrainSpec.task_options``, e.g. fusion's ``codec_checkpoint``)."""
        raise NotImplementedError

    def unranked(self, config: SectionedConfig) -> str | None:
        """Why trials trained with ``config`` would report no ``selection`` metric to rank
        them by (``jingle tune`` refuses such a base config), or None."""
        return None

    def build_model(self, config: SectionedConfig) -> nn.Module:
        raise NotImplementedError

    def worker(self, config: SectionedConfig, plan: TaskPlan, device: torch.device) -> TaskWorker:
        raise NotImplementedError
