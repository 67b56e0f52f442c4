"""One training step and the evaluation of the pointer network, in plain torch (no Ray):
tested on their own, and called unchanged by the pointer training task
(``pipelines/tasks/pointer.py``) whatever runs it (Ray Train, a Tune trial, a test).

Shape letters: B batch, M mel bins, Tr raw frames, Te edit frames.

The optimiser, the schedule and the optimiser step are every model's
(``training/optimization.py``), so the trainings cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from jingle.training.optimization import autocast, optimizer_step
from jingle.models.pointer import PointerOutput
from jingle.training.pointer_loss import PointerLoss, pointer_metric_fractions, pointer_metrics

# A padded batch (``datasets.pointer_sample.PointerBatch``: raw_mel [B, M, Tr], raw_lengths,
# edit_mel [B, M, Te], edit_lengths, pointers [B, Te], weights, ends; ``.to(device)``).
# models/ does not import datasets/, so it is taken by its fields.
PointerBatch = Any


def _forward(model: nn.Module, batch: PointerBatch) -> PointerOutput:
    return model(batch.raw_mel, batch.raw_lengths, batch.edit_mel, batch.edit_lengths, batch.pointers)


def _loss(loss: PointerLoss, output: PointerOutput, batch: PointerBatch):
    return loss(output.logits, batch.pointers, batch.weights, batch.raw_lengths, stop_logits=output.stop_logits, ends=batch.ends)


def pointer_train_step(
    model: nn.Module,
    batch: PointerBatch,
    loss: PointerLoss,
    optimizer: torch.optim.Optimizer,
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    grad_clip: float = 0.0,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """One optimisation step on a padded batch (moved to the model's device).

    Args:
        model: a ``PointerNetwork`` (possibly DDP-wrapped).
        batch: the padded examples.
        loss: the pointer loss (``build_pointer_loss``).
        optimizer: the model's optimiser (and ``scheduler``, stepped once per step).
        grad_clip: max gradient norm, 0 for none.
        autocast_dtype: mixed precision on GPU (e.g. torch.bfloat16), None for full precision.
    Returns:
        ``total`` and every loss term, the accuracies of ``pointer_metric_fractions``,
        ``grad_norm`` and ``learning_rate``.
    """
    model.train()
    batch = batch.to(next(model.parameters()).device)
    with autocast(batch.raw_mel.device.type, autocast_dtype):
        output = _forward(model, batch)
        result = _loss(loss, output, batch)
    step = optimizer_step(model, result.total, optimizer, scheduler=scheduler, grad_clip=grad_clip)
    metrics = result.scalars()
    metrics.update(pointer_metric_fractions(pointer_metrics(output.logits.detach(), batch.pointers, batch.edit_lengths)))
    return {**metrics, **step}


@torch.no_grad()
def evaluate_pointer(model: nn.Module, batches: Iterable[PointerBatch], loss: PointerLoss) -> dict[str, float]:
    """Loss terms and accuracies on held-out batches (eval mode: no dropout).

    Returns:
        every loss term averaged over examples (batch-size-weighted), the accuracies from the
        pooled counts of all batches, and those counts (``frames``, ``exact``, …) so that
        workers can pool theirs; empty when there were no batches.
    """
    model.eval()
    device = next(model.parameters()).device
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    examples = 0
    for batch in batches:
        batch = batch.to(device)
        output = _forward(model, batch)
        size = len(batch)
        for name, value in _loss(loss, output, batch).scalars().items():
            sums[name] = sums.get(name, 0.0) + value * size
        for name, value in pointer_metrics(output.logits, batch.pointers, batch.edit_lengths).items():
            counts[name] = counts.get(name, 0) + value
        examples += size
    if not examples:
        return {}
    return {
        **{name: value / examples for name, value in sums.items()},
        **pointer_metric_fractions(counts),
        **{name: float(value) for name, value in counts.items()},
        "examples": float(examples),
    }
