"""The fusion model's optional adversarial term: EnCodec's multi-scale STFT discriminator and
its hinge and feature-matching losses (``training/losses.py`` weighs them with ``gan_weight``).

Shape letters: B batch, S samples, K discriminator scales.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from encodec.msstftd import MultiScaleSTFTDiscriminator
from torch import nn


def build_discriminator(filters: int = 32, **kwargs: Any) -> MultiScaleSTFTDiscriminator:
    """EnCodec's multi-scale STFT discriminator (FFT 1024/2048/512); kwargs go to it.

    Its forward maps [B, 1, S] audio (S >= the largest FFT) to ``(logits, feature_maps)``:
    one logit map [B, 1, T', F'] per scale K, and per scale a list of 5 feature maps.
    """
    if filters < 1:
        raise ValueError(f"filters must be positive, got {filters}")
    return MultiScaleSTFTDiscriminator(filters=filters, **kwargs)


def hinge_generator_loss(fake_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """EnCodec's adversarial generator loss: mean over scales of mean(relu(1 - D_k(fake)))."""
    return torch.stack([F.relu(1.0 - logits).mean() for logits in fake_logits]).mean()


def hinge_discriminator_loss(real_logits: Sequence[torch.Tensor], fake_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """EnCodec's discriminator loss: mean over scales of mean(relu(1 - D_k(real))) + mean(relu(1 + D_k(fake)))."""
    if len(real_logits) != len(fake_logits):
        raise ValueError(f"need logits of as many scales for real and fake, got {len(real_logits)} and {len(fake_logits)}")
    per_scale = [F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean() for real, fake in zip(real_logits, fake_logits)]
    return torch.stack(per_scale).mean()


def feature_matching_loss(
    real_feature_maps: Sequence[Sequence[torch.Tensor]], fake_feature_maps: Sequence[Sequence[torch.Tensor]]
) -> torch.Tensor:
    """EnCodec's relative feature-matching L1: mean over scales and layers of
    mean|real - fake| / mean|real|, with the real features detached.

    Not part of ``FusionLoss``: a fusion has no real counterpart, and matching the features
    of the input or the target would reward copying it. It is here for a reconstruction
    stage where there is one.
    """
    terms = [
        F.l1_loss(fake, real.detach()) / (real.detach().abs().mean() + 1e-8)
        for real_scale, fake_scale in zip(real_feature_maps, fake_feature_maps, strict=True)
        for real, fake in zip(real_scale, fake_scale, strict=True)
    ]
    return torch.stack(terms).mean()


def discriminator_loss(discriminator: nn.Module, real_audio: torch.Tensor, fake_audio: torch.Tensor) -> torch.Tensor:
    """Hinge loss for the discriminator's own update; the fake audio is detached so that
    this step trains the discriminator only.

    Args:
        real_audio, fake_audio: [B, 1, S] waveforms.
    """
    real_logits, _ = discriminator(real_audio)
    fake_logits, _ = discriminator(fake_audio.detach())
    return hinge_discriminator_loss(real_logits, fake_logits)
