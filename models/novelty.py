"""How far a fusion output is from copying either source (design note 004): ``novelty_loss``.

The model's own measure, not only a training term: the compositional agent and the cascade
compute it in their forward pass (``CascadeOutput.novelty``), inference picks the output with
the lowest (``pipelines/fusion_inference.py``), and ``FusionLoss`` weighs it
(``losses.mask_reg_weight``). Plain torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

NOVELTY_THRESHOLD = 0.7


@dataclass
class NoveltyTerms:
    """Novelty regularisation (design note 004).

    Attributes:
        loss: scalar, ``mean_b relu(cos(out, in) - t) + relu(cos(out, tgt) - t)``.
        similarity_to_input: scalar, batch mean of the cosine similarity to the input.
        similarity_to_target: scalar, batch mean of the cosine similarity to the target.
    """

    loss: torch.Tensor
    similarity_to_input: torch.Tensor
    similarity_to_target: torch.Tensor


def novelty_loss(
    output: torch.Tensor, input: torch.Tensor, target: torch.Tensor, *, threshold: float = NOVELTY_THRESHOLD
) -> NoveltyTerms:
    """Penalise an output whose latents are too close to either source.

    Each latent is centred per channel over its frames (its long-term mean, the overall
    level and average spectrum, is removed) and then flattened per example ([B, D*T])
    before the cosine similarity, so the measure is of the whole clip's time-frequency
    pattern. Uncentred, the cosine of two log-mel clips is dominated by their shared
    level and spectral tilt (any two pieces of music score ~0.9), so it measured
    loudness, not novelty; centred, a copy scores 1, an unrelated clip ~0 and a
    stationary output exactly 0 (nothing moves).

    Args:
        output, input, target: [B, D, T] latents of the same shape.
        threshold: similarity allowed for free (0.7 in the notes;
            ``model.compositional.novelty_threshold``).
    """
    if not (output.shape == input.shape == target.shape):
        raise ValueError(f"novelty_loss needs equal shapes, got {tuple(output.shape)}, {tuple(input.shape)}, {tuple(target.shape)}")
    if output.dim() != 3:
        raise ValueError(f"novelty_loss expects [B, D, T] latents, got {tuple(output.shape)}")
    flat_output = _centred(output).flatten(1)  # [B, D*T]
    to_input = F.cosine_similarity(flat_output, _centred(input).flatten(1), dim=1)  # [B]
    to_target = F.cosine_similarity(flat_output, _centred(target).flatten(1), dim=1)  # [B]
    loss = (F.relu(to_input - threshold) + F.relu(to_target - threshold)).mean()
    return NoveltyTerms(loss, to_input.mean(), to_target.mean())


def _centred(latent: torch.Tensor) -> torch.Tensor:
    """[B, D, T] minus each channel's mean over frames."""
    return latent - latent.mean(dim=2, keepdim=True)
