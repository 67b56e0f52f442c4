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

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

import torch
from torch import nn

from jingle.models.cascade import FusionOutput
from jingle.training.fusion_config import FusionTrainConfig
from jingle.training.loss_result import LossResult
from jingle.training.adversarial import build_discriminator, discriminator_loss
from jingle.training.losses import FusionLoss, loss_domain
from jingle.models.masking import MaskingConfig, apply_complementary_mask
from jingle.training.optimization import autocast, optimizer_step


@dataclass
class PreparedBatch:
    """Model inputs and the clean latents the outputs are compared with."""

    input: torch.Tensor  # [B, D, T], masked in training
    target: torch.Tensor  # [B, D, T], shuffled and masked in training
    input_reference: torch.Tensor  # [B, D, T]
    target_reference: torch.Tensor  # [B, D, T]
    arrangement: torch.Tensor | None = None  # [B, D, T], the pairs' reference arrangements
    has_arrangement: torch.Tensor | None = None  # [B] bool


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
        self.loss = FusionLoss(config.losses, domain=self.domain, sample_rate=codec.sample_rate)
        self.masking: MaskingConfig | None = config.masking if cascade and config.masking.strategy != "none" else None
        self.shuffle_targets = config.losses.shuffle_targets
        self.teacher = config.losses.teacher_weight > 0
        self.discriminator = build_discriminator() if self.loss.needs_discriminator else None
        self.register_buffer("silence", codec.silence_latent().float(), persistent=False)  # [D]

    def prepare(self, batch: dict[str, torch.Tensor], *, training: bool, generator: torch.Generator | None) -> PreparedBatch:
        """Model inputs and references of a batch. With the teacher term, a row with a
        reference arrangement keeps its own target (the arrangement is of that pair);
        the others are shuffled among themselves."""
        device = self.silence.device
        input = batch["input_latent"].to(device, torch.float32)  # [B, D, T]
        target = batch["target_latent"].to(device, torch.float32)  # [B, D, T]
        arrangement = has_arrangement = None
        if self.teacher and "arrangement_latent" in batch:
            arrangement = batch["arrangement_latent"].to(device, torch.float32)  # [B, D, T]
            has_arrangement = torch.as_tensor(batch["has_arrangement"], dtype=torch.bool, device=device)  # [B]
        if training and self.shuffle_targets:
            movable = torch.arange(len(target), device=device)
            if has_arrangement is not None:
                movable = movable[~has_arrangement]
            if len(movable) > 1:
                target = target.clone()
                target[movable] = target[movable[derangement(len(movable), generator).to(device)]]
        if not (training and self.masking is not None):
            return PreparedBatch(input, target, input, target, arrangement, has_arrangement)
        masked = apply_complementary_mask(
            input,
            target,
            self.masking,
            generator=generator,
            energy=self._frame_energy(input),
            fill_value=self.silence.view(1, -1, 1),
        )
        return PreparedBatch(masked.input, masked.target, input, target, arrangement, has_arrangement)

    def _frame_energy(self, latent: torch.Tensor) -> torch.Tensor | None:
        """Loudness per frame for the energy mask: log-mel frames know it; EnCodec latents
        fall back to the masking module's mean square."""
        if self.domain == "mel":
            return torch.logsumexp(latent, dim=1)  # [B, T]
        return None

    def forward(self, output: FusionOutput, prepared: PreparedBatch | None = None) -> ObjectiveResult:
        """Losses of every output against its references, averaged over outputs (pairs);
        ``prepared`` brings the reference arrangements of the teacher term."""
        results, fakes, reals = [], [], []
        arrangement = prepared.arrangement if prepared is not None else None
        has_arrangement = prepared.has_arrangement if prepared is not None else None
        for index, latent in enumerate(output.outputs):
            novelty = output.novelty[index]
            if self.domain == "mel":
                results.append(self.loss(latent, output.input_references[index], output.target_references[index], novelty=novelty,
                                         arrangement=arrangement, has_arrangement=has_arrangement))
                continue
            fake = self.codec.decode(latent)  # [B, 1, S], gradients flow through the frozen decoder
            with torch.no_grad():
                input_audio = self.codec.decode(output.input_references[index])
                target_audio = self.codec.decode(output.target_references[index])
                arrangement_audio = self.codec.decode(arrangement) if arrangement is not None else None
            results.append(self.loss(fake, input_audio, target_audio, novelty=novelty, discriminator=self.discriminator,
                                     arrangement=arrangement_audio, has_arrangement=has_arrangement))
            fakes.append(fake)
            reals.append(target_audio)
        loss = _mean_results(results)
        if not fakes:
            return ObjectiveResult(loss)
        return ObjectiveResult(loss, torch.cat(fakes), torch.cat(reals))


def derangement(size: int, generator: torch.Generator | None) -> torch.Tensor:
    """A uniformly random permutation of ``range(size)`` that moves every index (size >= 2).

    ``shuffle_targets`` pairs each input with another example's target: a plain random
    permutation would leave some inputs with their own target (at batch 4, 62% of batches
    keep at least one), so the model would still see the fixed pairing. Rejection
    sampling draws ~e ≈ 2.7 permutations on average.
    """
    if size < 2:
        raise ValueError(f"a derangement needs at least 2 elements, got {size}")
    identity = torch.arange(size)
    while True:
        order = torch.randperm(size, generator=generator, device="cpu")
        if not bool((order == identity).any()):
            return order


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
        result = objective(output, prepared)
    step = optimizer_step(model, result.loss.total, optimizer, scheduler=scheduler, grad_clip=grad_clip)
    metrics = {**step_metrics(result.loss, output), **step}
    if objective.discriminator is not None and discriminator_optimizer is not None and result.fake_audio is not None:
        discriminator_optimizer.zero_grad(set_to_none=True)  # the generator loss left gradients here too
        d_loss = discriminator_loss(objective.discriminator, result.real_audio, result.fake_audio)
        d_loss.backward()
        discriminator_optimizer.step()
        metrics["discriminator"] = d_loss.item()
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
        metrics = step_metrics(objective(output, prepared).loss, output)
        size = len(prepared.input)
        for name, value in metrics.items():
            sums[name] = sums.get(name, 0.0) + value * size
        count += size
    return {name: value / count for name, value in sums.items()} if count else {}


# --------------------------------------------------------------------------- the arrangement score


@dataclass
class ArrangementValidator:
    """``val_score``: the fixed arrangement score (``evaluation/arrangement.py``) of the model's
    outputs on held-out segments, decoded through the codec as a user would hear them.

    The loss cannot rank checkpoints or trials: its weights are what a search changes, and
    it can be met by shortcuts (a copy, a mix, decorrelated bursts). The score is the same
    whatever the weights. The first ``segments`` held-out segments (a fixed order) are
    scored through ``evaluation/pair_score.py``, like ``jingle evaluate fusion``; each
    segment is prepared once per worker (its decoded sources analysed and transcribed, its
    shortcuts made and scored), and the shortcuts' mean scores are reported beside the
    model's (``val_score_plain_mix``...), so every validation shows where the model stands.

    Each output is scored against the latents it was made from: the whole segment, or for
    the adaptive agent each pair's reference windows (then nothing is cached, as the
    windows move), averaged over pairs. An output holding NaN or inf scores the floor.
    """

    codec: nn.Module
    segments: int
    shortcuts: bool = True  # score the shortcuts too (once per worker)
    _held_out: dict[int, Any] = field(default_factory=dict)  # segment index -> PreparedPair

    @torch.no_grad()
    def __call__(self, model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, float]:
        """Mean score, mean figures (``val_<figure>``) and the shortcuts' mean scores; empty
        when there is nothing to score."""
        from jingle.evaluation.pair_score import score_pair

        if self.segments < 1:
            return {}
        model.eval()
        scores: list[float] = []
        figures: dict[str, list[float]] = {}
        shortcuts: dict[str, list[float]] = {}
        index = 0
        for batch in batches:
            input = batch["input_latent"].float()  # [B, D, T]
            target = batch["target_latent"].float()  # [B, D, T]
            take = min(len(input), self.segments - index)
            if take <= 0:
                break
            input, target = input[:take], target[:take]
            output = model(input, target)
            whole_segment = output.input_references[0] is input  # else windows of it (adaptive agent)
            per_row: list[list[Any]] = [[] for _ in range(take)]  # row -> one ArrangementScore per pair
            for pair, latent in enumerate(output.outputs):
                fused = self._decode(latent)  # [B, S]
                for row in range(take):
                    prepared = self._prepare(
                        index + row, output.input_references[pair][row], output.target_references[pair][row], cache=whole_segment
                    )
                    result = score_pair(prepared, {"model": fused[row]}, self.codec.sample_rate)
                    per_row[row].append(result.outputs["model"])
                    for name, scored in result.shortcuts.items():
                        shortcuts.setdefault(name, []).append(scored.score)
            for per_pair in per_row:
                scores.append(float(np.mean([s.score for s in per_pair])))
                for name in per_pair[0].figures:
                    values = [s.figures[name] for s in per_pair if s.figures[name] is not None]
                    if values:
                        figures.setdefault(name, []).append(float(np.mean(values)))
            index += take
        if not scores:
            return {}
        metrics = {"score": float(np.mean(scores))}
        metrics.update({name: float(np.mean(values)) for name, values in figures.items()})
        metrics.update({f"score_{name}": float(np.mean(values)) for name, values in shortcuts.items() if values})
        return metrics

    def _decode(self, latent: torch.Tensor) -> np.ndarray:
        return self.codec.decode(latent.float())[:, 0].float().cpu().numpy()  # [B, S]

    def _prepare(self, index: int, input: torch.Tensor, target: torch.Tensor, *, cache: bool) -> Any:
        from jingle.evaluation.pair_score import prepare_pair

        if cache and index in self._held_out:
            return self._held_out[index]
        input_audio, target_audio = self._decode(torch.stack([input, target]))  # [S] each
        prepared = prepare_pair(input_audio, target_audio, self.codec.sample_rate, seed=index, shortcuts=self.shortcuts)
        if cache:
            self._held_out[index] = prepared
        return prepared
