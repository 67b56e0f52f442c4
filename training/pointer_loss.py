"""The pointer network's loss and metrics.

``PointerLoss`` combines a smoothed cross-entropy over raw frames (``smoothed_pointer_nll``)
with, in edit mode, a stop BCE (``stop_targets``); ``pointer_metrics`` counts right
pointers per batch and ``pointer_metric_fractions`` turns summed counts into accuracies.
It imports torch only: the fusion losses' auraloss and EnCodec stay in ``training/losses.py``.

Shape letters: B batch, Te edit frames, Tr raw frames. A pointer is the raw frame an edit
frame came from; padded edit frames have pointer -1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from jingle.core.config import config_from_dict, require_int, require_number
from jingle.training.loss_result import LossResult

POINTER_TOLERANCE_FRAMES = 2  # a near miss: ±2 frames is ±40 ms at 50 frames/s


def smoothed_pointer_nll(
    log_probs: torch.Tensor, pointers: torch.Tensor, raw_lengths: torch.Tensor, *, neighbours: int, smoothing: float
) -> torch.Tensor:
    """Cross-entropy per edit frame against a target smoothed onto neighbouring raw frames.

    The target puts ``1 - smoothing`` on the true frame and spreads ``smoothing`` evenly over
    its ±``neighbours`` frames that lie inside the raw length; a frame with no such neighbour
    (or ``neighbours=0``) keeps all the mass, i.e. plain cross-entropy. Neighbours are
    gathered one offset at a time, so no dense [B, Te, Tr] target is built.

    Args:
        log_probs: [B, Te, Tr] log-softmax over raw frames.
        pointers: [B, Te] int64, -1 on padding (the result there is 0).
        raw_lengths: [B] valid raw frames.
    Returns:
        [B, Te] negative log-likelihood of the smoothed target.
    """
    valid = pointers >= 0  # [B, Te]
    true = log_probs.gather(2, pointers.clamp(min=0)[..., None])[..., 0]  # [B, Te]
    neighbour_sum = torch.zeros_like(true)
    neighbour_count = torch.zeros_like(true)
    for offset in [*range(-neighbours, 0), *range(1, neighbours + 1)]:
        index = pointers + offset  # [B, Te]
        inside = (index >= 0) & (index < raw_lengths[:, None])  # [B, Te]
        value = log_probs.gather(2, index.clamp(0, log_probs.shape[2] - 1)[..., None])[..., 0]  # [B, Te]
        neighbour_sum = neighbour_sum + torch.where(inside, value, torch.zeros_like(value))
        neighbour_count = neighbour_count + inside.to(value.dtype)
    moved = smoothing * (neighbour_count > 0).to(true.dtype)  # [B, Te], 0 where no neighbour takes mass
    nll = -((1.0 - moved) * true + moved * neighbour_sum / neighbour_count.clamp(min=1.0))
    return torch.where(valid, nll, torch.zeros_like(nll))  # [B, Te]


def stop_targets(pointers: torch.Tensor, ends: torch.Tensor | None = None) -> torch.Tensor:
    """[B, Te] float: 1 at each sequence's last valid edit frame, 0 elsewhere.

    Args:
        pointers: [B, Te], -1 on padding.
        ends: [B] bool, False for an edit cut short (its last frame is no end: all 0);
            None: every edit ends at its last frame.
    """
    lengths = (pointers >= 0).sum(dim=1)  # [B]
    steps = torch.arange(pointers.shape[1], device=pointers.device)  # [Te]
    targets = steps[None, :] == (lengths - 1)[:, None]  # [B, Te]
    if ends is not None:
        targets = targets & ends[:, None].bool()
    return targets.float()


@dataclass(frozen=True)
class PointerLossConfig:
    """The pointer loss's settings (the ``losses`` section of a pointer config).

    Attributes:
        label_smoothing_frames: k, the target mass moved off the true frame is spread over
            its ±k neighbours; 0 is plain cross-entropy.
        label_smoothing: ε, the mass moved off the true frame (used when k > 0).
        stop_weight: weight of the stop BCE in the total loss (edit mode).
    """

    label_smoothing_frames: int = 2
    label_smoothing: float = 0.1
    stop_weight: float = 1.0

    def __post_init__(self) -> None:
        require_int("label_smoothing_frames", self.label_smoothing_frames, minimum=0)
        require_number("label_smoothing", self.label_smoothing, minimum=0.0, maximum=1.0, open_maximum=True)
        require_number("stop_weight", self.stop_weight, minimum=0.0, maximum=math.inf, open_maximum=True)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "PointerLossConfig":
        return config_from_dict(cls, values)


def build_pointer_loss(config: PointerLossConfig) -> "PointerLoss":
    return PointerLoss(**config.to_dict())


class PointerLoss(nn.Module):
    """The pointer network's loss.

    ``total = pointer + stop_weight * stop``, with

    - ``pointer``: cross-entropy over raw frames (padded raw frames are masked by the
      model's logits), target smoothed to ±``label_smoothing_frames`` neighbours
      (``smoothed_pointer_nll``), weighted mean over edit frames by ``weights``;
    - ``stop`` (edit mode, when stop logits are given): BCE-with-logits on the stop head,
      target 1 at each sequence's last edit frame (unless ``ends`` says the edit was cut
      short there), mean over valid edit frames. The frame
      weights are not applied to it: they say how sure a pointer is, not where the edit ends.

    Args:
        label_smoothing_frames: k, neighbours on each side that share the smoothed mass.
        label_smoothing: ε, mass moved off the true frame (only with k > 0).
        stop_weight: weight of the stop term.
    """

    def __init__(self, *, label_smoothing_frames: int = 0, label_smoothing: float = 0.0, stop_weight: float = 1.0) -> None:
        super().__init__()
        if isinstance(label_smoothing_frames, bool) or not isinstance(label_smoothing_frames, int) or label_smoothing_frames < 0:
            raise ValueError(f"label_smoothing_frames must be an integer >= 0, got {label_smoothing_frames!r}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        if not (math.isfinite(stop_weight) and stop_weight >= 0):
            raise ValueError(f"stop_weight must be a finite number >= 0, got {stop_weight!r}")
        self.label_smoothing_frames = label_smoothing_frames
        self.label_smoothing = label_smoothing
        self.stop_weight = stop_weight

    def forward(
        self,
        logits: torch.Tensor,
        pointers: torch.Tensor,
        weights: torch.Tensor,
        raw_lengths: torch.Tensor,
        *,
        stop_logits: torch.Tensor | None = None,
        ends: torch.Tensor | None = None,
    ) -> LossResult:
        """Terms ``pointer`` (and ``stop`` with stop logits) and their weighted total.

        Args:
            logits: [B, Te, Tr] pointer logits.
            pointers: [B, Te] int64 true pointers, -1 on padding.
            weights: [B, Te] per-frame weights, 0 on padding.
            raw_lengths: [B] valid raw frames.
            stop_logits: [B, Te] stop logits (edit mode), or None.
            ends: [B] bool, whether each edit really ends at its last frame (``stop_targets``).
        """
        batch, edit_frames, _ = logits.shape
        if pointers.shape != (batch, edit_frames) or weights.shape != (batch, edit_frames):
            raise ValueError(
                f"pointers and weights must be [{batch}, {edit_frames}], got {tuple(pointers.shape)}, {tuple(weights.shape)}"
            )
        if raw_lengths.shape != (batch,):
            raise ValueError(f"raw_lengths must be [{batch}], got {tuple(raw_lengths.shape)}")
        if bool((pointers >= raw_lengths[:, None]).any()):
            raise ValueError("pointers must lie inside the raw length")
        log_probs = torch.log_softmax(logits.float(), dim=-1)  # [B, Te, Tr], float32 under autocast too
        nll = smoothed_pointer_nll(
            log_probs, pointers, raw_lengths, neighbours=self.label_smoothing_frames, smoothing=self.label_smoothing
        )  # [B, Te]
        weights = torch.where(pointers >= 0, weights.float(), torch.zeros_like(weights, dtype=torch.float32))
        terms = {"pointer": (nll * weights).sum() / weights.sum().clamp(min=1e-8)}
        total = terms["pointer"]
        if stop_logits is not None:
            if stop_logits.shape != (batch, edit_frames):
                raise ValueError(f"stop_logits must be [{batch}, {edit_frames}], got {tuple(stop_logits.shape)}")
            valid = (pointers >= 0).float()  # [B, Te]
            bce = F.binary_cross_entropy_with_logits(stop_logits.float(), stop_targets(pointers, ends), reduction="none")  # [B, Te]
            terms["stop"] = (bce * valid).sum() / valid.sum().clamp(min=1.0)
            if self.stop_weight > 0:
                total = total + self.stop_weight * terms["stop"]
        return LossResult(total, terms)


def pointer_metrics(logits: torch.Tensor, pointers: torch.Tensor, lengths: torch.Tensor) -> dict[str, int]:
    """Counts of right pointers (argmax of the logits), to be summed over batches and workers.

    Args:
        logits: [B, Te, Tr] pointer logits.
        pointers: [B, Te] true pointers.
        lengths: [B] valid edit frames.
    Returns:
        ``frames`` (valid edit frames), ``exact``, ``within_2`` (±2 frames), ``jumps``
        (frames j >= 1 whose true pointer is not pointer j-1 plus one) and
        ``jumps_within_2``; ``pointer_metric_fractions`` turns them into accuracies.
    """
    batch, edit_frames, _ = logits.shape
    if pointers.shape != (batch, edit_frames) or lengths.shape != (batch,):
        raise ValueError(f"need pointers [{batch}, {edit_frames}] and lengths [{batch}], got {tuple(pointers.shape)}, {tuple(lengths.shape)}")
    valid = torch.arange(edit_frames, device=pointers.device)[None, :] < lengths[:, None]  # [B, Te]
    error = (logits.argmax(dim=-1) - pointers).abs()  # [B, Te]
    near = error <= POINTER_TOLERANCE_FRAMES
    jump = torch.zeros_like(valid)
    jump[:, 1:] = pointers[:, 1:] != pointers[:, :-1] + 1
    jump = jump & valid
    return {
        "frames": int(valid.sum()),
        "exact": int((valid & (error == 0)).sum()),
        "within_2": int((valid & near).sum()),
        "jumps": int(jump.sum()),
        "jumps_within_2": int((jump & near).sum()),
    }


def pointer_metric_fractions(counts: Mapping[str, int]) -> dict[str, float]:
    """``accuracy``, ``accuracy_within_2`` and ``jump_accuracy_within_2`` from (summed)
    ``pointer_metrics`` counts; NaN where there was nothing to count."""

    def fraction(hits: str, total: str) -> float:
        return counts[hits] / counts[total] if counts[total] else math.nan

    return {
        "accuracy": fraction("exact", "frames"),
        "accuracy_within_2": fraction("within_2", "frames"),
        "jump_accuracy_within_2": fraction("jumps_within_2", "jumps"),
    }
