"""What every model's training shares in plain torch: the optimiser, the learning-rate
schedule and the optimiser step (backward, clipping, step) with its metrics.

The per-model steps (``training/fusion_training.py``, ``training/pointer_training.py``) compute
a loss and hand it to ``optimizer_step``, so the two trainings cannot drift apart.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


def build_optimizer(model: nn.Module, training: Any) -> torch.optim.Optimizer:
    """AdamW from a ``core.config.TrainingConfig`` (learning_rate, weight_decay)."""
    return torch.optim.AdamW(model.parameters(), lr=training.learning_rate, weight_decay=training.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, training: Any, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then constant or cosine decay to zero at ``total_steps``."""
    warmup = min(training.warmup_steps, max(0, total_steps - 1))

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if training.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") else model


def autocast(device_type: str, dtype: torch.dtype | None):
    """Mixed precision when ``dtype`` is given (bf16 on GPU), full precision otherwise."""
    return torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None)


def optimizer_step(
    model: nn.Module,
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    grad_clip: float = 0.0,
) -> dict[str, float]:
    """Back-propagate ``loss``, clip, step the optimiser (and the schedule, once).

    Returns:
        ``grad_norm`` (before clipping) and the ``learning_rate`` the step used.
    """
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else float("inf"))
    learning_rate = optimizer.param_groups[0]["lr"]
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return {"grad_norm": float(grad_norm), "learning_rate": learning_rate}
