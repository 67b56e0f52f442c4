"""A third model, for the tests: one task file and one config class, nothing else.

``tests/test_registry.py`` registers it (``pipelines/registry.py``) and trains it with
``jingle train toy`` on the fusion model's shards: a 1x1 convolution from the input's
latent to the target's, fitted by mean squared error. That it trains through the one
training run (Ray Train, checkpoints, MLflow) without a line elsewhere is what it shows.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from jingle.core.config import SectionedConfig, TrainingConfig, config_from_dict, require_int
from jingle.datasets.shard_rows import Rows
from jingle.pipelines.common import UsageError
from jingle.pipelines.tasks.base import Task, TaskPlan, TaskWorker

COLUMNS = ("input_latent", "target_latent")


@dataclass(frozen=True)
class ToyModelConfig:
    latent_dim: int = 128

    def __post_init__(self) -> None:
        require_int("model.latent_dim", self.latent_dim, minimum=1)


@dataclass(frozen=True)
class ToyTrainConfig(SectionedConfig):
    model: ToyModelConfig = field(default_factory=ToyModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    SECTIONS: ClassVar[dict] = {
        "model": lambda values: config_from_dict(ToyModelConfig, values),
        "training": lambda values: config_from_dict(TrainingConfig, values),
    }


class ToyTask(Task):
    name = "toy"
    config_class = ToyTrainConfig
    columns = COLUMNS
    shard_kind = "fusion"  # it trains on jingle preprocess fusion's shards

    def plan(self, config: ToyTrainConfig, data: Any, *, train_ids: list[str], workers: int, options: Mapping[str, Any]) -> TaskPlan:
        if config.model.latent_dim != data.codec["dim"]:
            raise UsageError(f"model.latent_dim is {config.model.latent_dim} but the shards' latents have {data.codec['dim']} channels")
        rows = sum(data.rows_by_pair[pair_id] for pair_id in train_ids)
        steps = rows // workers // config.training.batch_size
        if steps < 1:
            raise UsageError(f"{rows} training rows cannot fill a batch of {config.training.batch_size} on {workers} worker(s)")
        return TaskPlan(steps_per_epoch=steps, codec=dict(data.codec))

    def build_model(self, config: ToyTrainConfig) -> nn.Module:
        return nn.Conv1d(config.model.latent_dim, config.model.latent_dim, kernel_size=1)

    def worker(self, config: ToyTrainConfig, plan: TaskPlan, device: torch.device) -> "ToyWorker":
        torch.manual_seed(config.training.seed)
        return ToyWorker(config, device, self.build_model(config).to(device))


class ToyWorker(TaskWorker):
    def __init__(self, config: ToyTrainConfig, device: torch.device, model: nn.Module) -> None:
        self.config, self.device, self.model = config, device, model

    def _pairs(self, rows: Rows, *, epoch: int, drop_last: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in rows.batches(self.config.training.batch_size, epoch=epoch, drop_last=drop_last):
            yield tuple(torch.as_tensor(np.asarray(batch[name]), dtype=torch.float32, device=self.device) for name in COLUMNS)

    def batches(self, rows: Rows, *, epoch: int, rank: int, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self._pairs(rows, epoch=epoch, drop_last=True)

    def step(self, model: nn.Module, batch, optimizer: torch.optim.Optimizer, scheduler: Any) -> dict[str, float]:
        source, target = batch
        loss = nn.functional.mse_loss(model(source), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        return {"total": float(loss.detach())}

    def validate(self, model: nn.Module, rows: Rows) -> dict[str, float]:
        with torch.inference_mode():
            losses = [float(nn.functional.mse_loss(model(source), target)) for source, target in self._pairs(rows, epoch=0, drop_last=False)]
        return {"val_total": float(np.mean(losses)) if losses else float("nan")}
