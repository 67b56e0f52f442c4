"""The fusion model's objective, training step and evaluation, in plain torch (no Ray):
tested on their own, and called unchanged by the fusion training task
(``pipelines/tasks/fusion.py``) whatever runs it (Ray Train, a Tune trial, a test).

Shape letters: B batch, D latent channels, T frames, S samples.

A batch is a dict with ``input_latent`` and ``target_latent`` ([B, D, T], float16 or
float32), as the shards store them. ``FusionObjective`` turns a batch into model inputs
(target shuffling and complementary masking in training, for the cascade only) and a model
output into losses, in the domain the codec provides: decoded audio for EnCodec (its
decoder is differentiable), log-mel frames for the mel codec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from models.cascade import FusionOutput
from models.fusion_config import FusionTrainConfig
from models.loss_result import LossResult
from models.losses import FusionLoss, build_discriminator, discriminator_loss, loss_domain
from models.masking import MaskingConfig, apply_complementary_mask
from models.optimization import autocast, optimizer_step


@dataclass
class PreparedBatch:
    """Model inputs and the clean latents the outputs are compared with."""

    input: torch.Tensor  # [B, D, T], masked in training
    target: torch.Tensor  # [B, D, T], shuffled and masked in training
    input_reference: torch.Tensor  # [B, D, T]
    target_reference: torch.Tensor  # [B, D, T]


@dataclass
class ObjectiveResult:
    loss: LossResult
    fake_audio: torch.Tensor | None = None  # [P*B, 1, S], audio domain only
    real_audio: torch.Tensor | None = None  # [P*B, 1, S]


class FusionObjective(nn.Module):
    """Masking, target shuffling and the combined losses for one codec.

    Args:
        codec: the frozen codec the latents come from.
        config: the training config (losses, masking, training options).
        cascade: whether the model is a cascade (masking applies to cascades only).
    """

    def __init__(self, *, codec: nn.Module, config: FusionTrainConfig, cascade: bool) -> None:
        super().__init__()
        self.codec = codec.eval().requires_grad_(False)
        self.domain = loss_domain(codec)
        self.loss = FusionLoss(config.losses, domain=self.domain)
        self.masking: MaskingConfig | None = config.masking if cascade and config.masking.strategy != "none" else None
        self.shuffle_targets = config.losses.shuffle_targets
        self.discriminator = build_discriminator() if self.loss.needs_discriminator else None
        self.register_buffer("silence", codec.silence_latent().float(), persistent=False)  # [D]

    def prepare(self, batch: dict[str, torch.Tensor], *, training: bool, generator: torch.Generator | None) -> PreparedBatch:
        device = self.silence.device
        input = batch["input_latent"].to(device, torch.float32)  # [B, D, T]
        target = batch["target_latent"].to(device, torch.float32)  # [B, D, T]
        if training and self.shuffle_targets and len(target) > 1:
            order = torch.randperm(len(target), generator=generator, device="cpu").to(device)
            target = target[order]
        if not (training and self.masking is not None):
            return PreparedBatch(input, target, input, target)
        masked = apply_complementary_mask(
            input,
            target,
            self.masking,
            generator=generator,
            energy=self._frame_energy(input),
            fill_value=self.silence.view(1, -1, 1),
        )
        return PreparedBatch(masked.input, masked.target, input, target)

    def _frame_energy(self, latent: torch.Tensor) -> torch.Tensor | None:
        """Loudness per frame for the energy mask: log-mel frames know it; EnCodec latents
        fall back to the masking module's mean square."""
        if self.domain == "mel":
            return torch.logsumexp(latent, dim=1)  # [B, T]
        return None

    def forward(self, output: FusionOutput) -> ObjectiveResult:
        """Losses of every output against its references, averaged over outputs (pairs)."""
        results, fakes, reals = [], [], []
        for index, latent in enumerate(output.outputs):
            novelty = output.novelty[index]
            if self.domain == "mel":
                results.append(self.loss(latent, output.input_references[index], output.target_references[index], novelty=novelty))
                continue
            fake = self.codec.decode(latent)  # [B, 1, S], gradients flow through the frozen decoder
            with torch.no_grad():
                input_audio = self.codec.decode(output.input_references[index])
                target_audio = self.codec.decode(output.target_references[index])
            results.append(self.loss(fake, input_audio, target_audio, novelty=novelty, discriminator=self.discriminator))
            fakes.append(fake)
            reals.append(target_audio)
        loss = _mean_results(results)
        if not fakes:
            return ObjectiveResult(loss)
        return ObjectiveResult(loss, torch.cat(fakes), torch.cat(reals))


def _mean_results(results: list[LossResult]) -> LossResult:
    if len(results) == 1:
        return results[0]
    terms = {name: torch.stack([r.terms[name] for r in results]).mean() for name in results[0].terms}
    return LossResult(total=torch.stack([r.total for r in results]).mean(), terms=terms)


def step_metrics(result: LossResult, output: FusionOutput) -> dict[str, float]:
    """Every loss term, the six component weights and the window selection, as floats."""
    metrics = result.scalars()
    metrics.update(output.component_weights_by_name())
    for index, pair in enumerate((output.window_metadata or {}).get("pairs", [])):
        metrics.update({f"pair{index}_{name}": float(value) for name, value in pair.items()})
    return metrics


def train_step(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    objective: FusionObjective,
    optimizer: torch.optim.Optimizer,
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    generator: torch.Generator | None = None,
    grad_clip: float = 0.0,
    autocast_dtype: torch.dtype | None = None,
    discriminator_optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, float]:
    """One optimisation step; returns the step's metrics (total, every term, grad norm, lr).

    Args:
        model: the fusion model (possibly DDP-wrapped).
        batch: ``input_latent`` and ``target_latent``, [B, D, T].
        objective: masking, shuffling and losses.
        optimizer: the model's optimiser (and ``scheduler``, stepped once per step).
        generator: the step's randomness (target order, masks, anti-cheating noise).
        grad_clip: max gradient norm, 0 for none.
        autocast_dtype: mixed precision on GPU (e.g. torch.bfloat16), None for full precision.
        discriminator_optimizer: with a GAN term, the discriminator is updated after the model.
    """
    model.train()
    prepared = objective.prepare(batch, training=True, generator=generator)
    with autocast(prepared.input.device.type, autocast_dtype):
        output = model(
            prepared.input,
            prepared.target,
            input_reference=prepared.input_reference,
            target_reference=prepared.target_reference,
            generator=generator,
        )
        result = objective(output)
    step = optimizer_step(model, result.loss.total, optimizer, scheduler=scheduler, grad_clip=grad_clip)
    metrics = {**step_metrics(result.loss, output), **step}
    if objective.discriminator is not None and discriminator_optimizer is not None and result.fake_audio is not None:
        discriminator_optimizer.zero_grad(set_to_none=True)  # the generator loss left gradients here too
        d_loss = discriminator_loss(objective.discriminator, result.real_audio, result.fake_audio)
        d_loss.backward()
        discriminator_optimizer.step()
        metrics["discriminator"] = float(d_loss)
    return metrics


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]], objective: FusionObjective) -> dict[str, float]:
    """Mean losses on held-out batches (batch-size-weighted): no masking, no shuffling, no
    noise (eval mode). Empty when there were no batches."""
    model.eval()
    sums: dict[str, float] = {}
    count = 0
    for batch in batches:
        prepared = objective.prepare(batch, training=False, generator=None)
        output = model(prepared.input, prepared.target)
        metrics = step_metrics(objective(output).loss, output)
        size = len(prepared.input)
        for name, value in metrics.items():
            sums[name] = sums.get(name, 0.0) + value * size
        count += size
    return {name: value / count for name, value in sums.items()} if count else {}
