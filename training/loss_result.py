"""What every loss module returns: its total and its named terms (``LossResult``).

A module of its own so that the pointer loss (``training/pointer_loss.py``) and the fusion
losses (``training/losses.py``) share it without the pointer side importing the fusion
side's auraloss and EnCodec.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LossResult:
    """What ``FusionLoss`` and ``PointerLoss`` return.

    Attributes:
        total: scalar to back-propagate.
        terms: every term by name, scalars (each loss's ``forward`` lists its own).
    """

    total: torch.Tensor
    terms: dict[str, torch.Tensor]

    def scalars(self) -> dict[str, float]:
        """``total`` and every term as plain floats, for logging."""
        return {"total": float(self.total.detach()), **{name: float(value.detach()) for name, value in self.terms.items()}}
