"""One training step of the fusion model, in plain torch (no Ray): tested on its own, and
called unchanged by the Ray Train worker loop and by Tune trials.

Shape letters: B batch, D latent channels, T frames, S samples.

A batch is a dict with ``input_latent`` and ``target_latent`` ([B, D, T], float16 or
float32), as the shards store them. ``FusionObjective`` turns a batch into model inputs
(target shuffling and complementary masking in training, for the cascade only) and a model
output into losses, in the domain the codec provides: decoded audio for EnCodec (its
decoder is differentiable), log-mel frames for the mel codec.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from models.cascade import FusionOutput
from models.fusion_config import FusionTrainConfig, TrainingConfig
from models.losses import FusionLoss, LossResult, build_discriminator, discriminator_loss, loss_domain
from models.masking import MaskingConfig, apply_complementary_mask


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
        self.shuffle_targets = config.training.shuffle_targets
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


def build_optimizer(model: nn.Module, training: TrainingConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=training.learning_rate, weight_decay=training.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, training: TrainingConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
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
    device_type = prepared.input.device.type
    with torch.autocast(device_type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        output = model(
            prepared.input,
            prepared.target,
            input_reference=prepared.input_reference,
            target_reference=prepared.target_reference,
            generator=generator,
        )
        result = objective(output)
    optimizer.zero_grad(set_to_none=True)
    result.loss.total.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else float("inf"))
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    metrics = step_metrics(result.loss, output)
    metrics["grad_norm"] = float(grad_norm)
    metrics["learning_rate"] = optimizer.param_groups[0]["lr"]
    if objective.discriminator is not None and discriminator_optimizer is not None and result.fake_audio is not None:
        discriminator_optimizer.zero_grad(set_to_none=True)  # the generator loss left gradients here too
        d_loss = discriminator_loss(objective.discriminator, result.real_audio, result.fake_audio)
        d_loss.backward()
        discriminator_optimizer.step()
        metrics["discriminator"] = float(d_loss)
    return metrics


@dataclass
class MetricSums:
    """Batch-size-weighted sums of metrics, so workers can add theirs before dividing."""

    sums: dict[str, float]
    count: int

    def means(self) -> dict[str, float]:
        return {name: value / self.count for name, value in self.sums.items()} if self.count else {}


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]], objective: FusionObjective) -> MetricSums:
    """Losses on held-out batches: no masking, no shuffling, no noise (eval mode)."""
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
    return MetricSums(sums, count)
