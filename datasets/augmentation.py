"""Data augmentation for the pointer network (plan 002).

A sample is a raw recording's log-mel spectrogram, its edited version's, and for every
edit frame the raw frame it came from (the pointer). Shape letters: M mel bins, T frames
(``T_raw`` of the raw recording, ``T_edit`` of the edit), C chunks. Mels are ``[M, T]``
float32 (time last, as in the plan), pointers ``[T_edit]`` int64 in ``[0, T_raw)``.

Category A changes mel values only; frame counts and pointers are untouched:

- A1 ``add_noise``: Gaussian noise of std ``level * mel.std()``, the level drawn in
  ``[level_min, level_max]``. By default raw and edit get different levels and draws
  (different recording conditions); ``same_on_both`` gives the same level and the same
  noise pattern on the frames they share.
- A2 ``freq_mask`` / ``time_mask`` (SpecAugment): the same mel bands, and the same frame
  spans, on raw and edit. A span is drawn over the longer of the two (width at most
  ``max_width`` and at most a tenth of that length, as in the plan; none when the length
  is below 10) and clipped to each tensor's length.
- A3 ``apply_gain``: our mels are natural-log magnitude mels (``datasets/features.py``),
  so a gain ``scale`` is the *additive* shift ``log(scale)``; the plan multiplies, which is
  right for linear mels only. Different scales on raw and edit by default (gain staging).
- A4 ``channel_dropout``: each mel band dropped with ``dropout_rate``, the same bands on
  both.

Masked or dropped values are filled with the tensor's mean (``fill="mean"``, the
default) or zero (``fill="zero"``, the plan's). In a log-mel, zero is magnitude 1, a
loud value well above silence, so zeroing paints loud stripes; SpecAugment zeroes
*normalised* features, where zero is the mean, so the mean is what it intends here.

Category B changes the frame structure and keeps every pointer on the raw frame it named:

- B1 ``chunk_shuffle``: raw cut into chunks of ``chunk_size`` (the remainder is a chunk
  too) put in a random order; the edit is kept and pointers are remapped.
- B2 ``random_crop``: a window of the edit, and the raw frames it points to plus up to
  ``context_pad`` frames each side (drawn per side, so the kept frames do not always sit
  at the same offset).
- B3 ``concatenate_samples``: two samples end to end; ``Augmentor.concatenate`` does it
  in the collate step.

Seeding: every function takes an explicit ``torch.Generator`` (CPU); nothing reads the
global RNG. ``Augmentor`` seeds one generator per sample from ``(seed, epoch, index)`` and
one per batch from ``(seed, epoch, batch_index)``, so an output depends on those numbers
only, never on call order or on other samples. Inputs are never modified in place;
outputs may be views of them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, NoReturn

import torch

from models.fusion_config import ConfigError

FILLS = ("mean", "zero")
PAIRINGS = ("random", "similar_length")


# ----------------------------------------------------------------------------- samples


@dataclass(frozen=True, eq=False)  # tensors have no truth value: samples compare by identity
class PointerSample:
    """One training example of the pointer network.

    Attributes:
        raw_mel: [M, T_raw] float32 log-mel of the raw recording.
        edit_mel: [M, T_edit] float32 log-mel of the edit (T_edit may be 0).
        pointers: [T_edit] int64, the raw frame each edit frame came from, in [0, T_raw).
        weights: optional [T_edit] float32 per-edit-frame loss weight (alignment
            confidence); it moves with the edit frames.
    """

    raw_mel: torch.Tensor
    edit_mel: torch.Tensor
    pointers: torch.Tensor
    weights: torch.Tensor | None = None

    def __post_init__(self) -> None:
        for name in ("raw_mel", "edit_mel"):
            mel = getattr(self, name)
            if mel.ndim != 2 or mel.dtype != torch.float32:
                raise ValueError(f"{name} must be a [M, T] float32 tensor, got {tuple(mel.shape)} {mel.dtype}")
        if self.raw_mel.shape[0] != self.edit_mel.shape[0]:
            raise ValueError(f"raw_mel and edit_mel mel bins differ: {self.raw_mel.shape[0]} != {self.edit_mel.shape[0]}")
        edit_frames = self.edit_mel.shape[1]
        pointers, weights = self.pointers, self.weights
        if pointers.shape != (edit_frames,) or pointers.dtype != torch.int64:
            raise ValueError(f"pointers must be [T_edit={edit_frames}] int64, got {tuple(pointers.shape)} {pointers.dtype}")
        if edit_frames:
            lowest, highest = int(pointers.min()), int(pointers.max())
            if lowest < 0 or highest >= self.raw_frames:
                raise ValueError(f"pointers must lie in [0, {self.raw_frames}), got [{lowest}, {highest}]")
        if weights is not None and (weights.shape != (edit_frames,) or weights.dtype != torch.float32):
            raise ValueError(f"weights must be [T_edit={edit_frames}] float32, got {tuple(weights.shape)} {weights.dtype}")

    @property
    def mel_bins(self) -> int:
        return self.raw_mel.shape[0]

    @property
    def raw_frames(self) -> int:
        return self.raw_mel.shape[1]

    @property
    def edit_frames(self) -> int:
        return self.edit_mel.shape[1]


class MelPair(NamedTuple):
    """A category-A result: the augmented raw [M, T_raw] and edit [M, T_edit] mels."""

    raw_mel: torch.Tensor
    edit_mel: torch.Tensor


@dataclass(frozen=True)
class ShuffleResult:
    """B1's result. ``chunk_order`` [C] holds the original chunk index at each new slot."""

    raw_mel: torch.Tensor  # [M, T_raw]
    edit_mel: torch.Tensor  # [M, T_edit], the input's
    pointers: torch.Tensor  # [T_edit]
    chunk_order: torch.Tensor  # [C]


@dataclass(frozen=True)
class CropResult:
    """B2's result: edit frame j was frame ``j + edit_start`` of the input edit, raw frame i
    was frame ``i + raw_start`` of the input raw."""

    raw_mel: torch.Tensor  # [M, T_raw']
    edit_mel: torch.Tensor  # [M, T_edit']
    pointers: torch.Tensor  # [T_edit']
    edit_start: int
    raw_start: int


# ------------------------------------------------------------------------ randomness


def _uniform(generator: torch.Generator, low: float = 0.0, high: float = 1.0) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """An integer in [low, high], both included (as ``random.randint``)."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def _seeded_generator(seed: int, stream: str, epoch: int, index: int) -> torch.Generator:
    # A hash rather than arithmetic on the numbers, so that neighbouring (epoch, index)
    # pairs get unrelated streams and sample and batch streams never coincide.
    digest = hashlib.blake2b(repr((seed, stream, epoch, index)).encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little"))


def _fill_value(mel: torch.Tensor, fill: str) -> float:
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {FILLS}, got {fill!r}")
    if fill == "zero" or mel.numel() == 0:
        return 0.0
    return float(mel.mean())


def _check_pair(raw_mel: torch.Tensor, edit_mel: torch.Tensor) -> None:
    if raw_mel.ndim != 2 or edit_mel.ndim != 2 or raw_mel.shape[0] != edit_mel.shape[0]:
        raise ValueError(f"expected mels [M, T_raw] and [M, T_edit], got {tuple(raw_mel.shape)} and {tuple(edit_mel.shape)}")


# ------------------------------------------------------------- category A: values only


def add_noise(
    raw_mel: torch.Tensor,
    edit_mel: torch.Tensor,
    *,
    level_min: float,
    level_max: float,
    same_on_both: bool = False,
    generator: torch.Generator,
) -> MelPair:
    """A1: add Gaussian noise of std ``level * mel.std()``, level uniform in [level_min, level_max].

    With ``same_on_both`` the level is drawn once and both tensors get the same unit noise
    pattern on the frames they share (each scaled by its own std); otherwise each tensor
    gets its own level and draw.
    """
    _check_pair(raw_mel, edit_mel)
    if not 0 <= level_min <= level_max:
        raise ValueError(f"need 0 <= level_min <= level_max, got {level_min} and {level_max}")
    mel_bins = raw_mel.shape[0]
    if same_on_both:
        level = _uniform(generator, level_min, level_max)
        longest = max(raw_mel.shape[1], edit_mel.shape[1])
        unit_noise = torch.randn(mel_bins, longest, generator=generator)  # [M, max(T_raw, T_edit)]
        unit_noises = (unit_noise[:, : raw_mel.shape[1]], unit_noise[:, : edit_mel.shape[1]])
        levels = (level, level)
    else:
        levels, unit_noises = [], []
        for mel in (raw_mel, edit_mel):
            levels.append(_uniform(generator, level_min, level_max))
            unit_noises.append(torch.randn(mel.shape, generator=generator))
    noisy = []
    for mel, level, unit_noise in zip((raw_mel, edit_mel), levels, unit_noises):
        std = float(mel.std()) if mel.numel() > 1 else 0.0
        noisy.append(mel + unit_noise.to(mel.device, mel.dtype) * (level * std))
    return MelPair(*noisy)


def freq_mask(
    raw_mel: torch.Tensor,
    edit_mel: torch.Tensor,
    *,
    num_masks: int,
    max_width: int,
    fill: str = "mean",
    generator: torch.Generator,
) -> MelPair:
    """A2: fill ``num_masks`` bands of 1..max_width mel bins, the same bands on raw and edit."""
    _check_pair(raw_mel, edit_mel)
    if num_masks < 0 or max_width < 0:
        raise ValueError(f"num_masks and max_width must be >= 0, got {num_masks} and {max_width}")
    mel_bins = raw_mel.shape[0]
    widest = min(max_width, mel_bins)
    if num_masks == 0 or widest < 1:
        return MelPair(raw_mel, edit_mel)
    band_mask = torch.zeros(mel_bins, dtype=torch.bool)  # [M]
    for _ in range(num_masks):
        width = _randint(1, widest, generator)
        start = _randint(0, mel_bins - width, generator)
        band_mask[start : start + width] = True
    return MelPair(*(_fill_bands(mel, band_mask, fill) for mel in (raw_mel, edit_mel)))


def time_mask(
    raw_mel: torch.Tensor,
    edit_mel: torch.Tensor,
    *,
    num_masks: int,
    max_width: int,
    fill: str = "mean",
    generator: torch.Generator,
) -> MelPair:
    """A2: fill ``num_masks`` frame spans, the same spans on raw and edit.

    Spans are drawn over L = max(T_raw, T_edit) frames with a width in
    [1, min(max_width, L // 10)] and clipped to each tensor; no span when L < 10. Masked
    edit frames keep their pointers: the model learns to point from context.
    """
    _check_pair(raw_mel, edit_mel)
    if num_masks < 0 or max_width < 0:
        raise ValueError(f"num_masks and max_width must be >= 0, got {num_masks} and {max_width}")
    length = max(raw_mel.shape[1], edit_mel.shape[1])
    widest = min(max_width, length // 10)
    if num_masks == 0 or widest < 1:
        return MelPair(raw_mel, edit_mel)
    frame_mask = torch.zeros(length, dtype=torch.bool)  # [L]
    for _ in range(num_masks):
        width = _randint(1, widest, generator)
        start = _randint(0, length - width, generator)
        frame_mask[start : start + width] = True
    masked = []
    for mel in (raw_mel, edit_mel):
        frames_masked = frame_mask[: mel.shape[1]].to(mel.device)  # [T]
        masked.append(mel.masked_fill(frames_masked[None, :], _fill_value(mel, fill)))
    return MelPair(*masked)


def apply_gain(
    raw_mel: torch.Tensor,
    edit_mel: torch.Tensor,
    *,
    scale_min: float,
    scale_max: float,
    same_on_both: bool = False,
    generator: torch.Generator,
) -> MelPair:
    """A3: a gain of ``scale`` uniform in [scale_min, scale_max], as ``mel + log(scale)``.

    Our mels are natural-log magnitude mels, where a gain is additive; the plan's
    ``mel * scale`` holds for linear mels only. ``same_on_both`` draws one scale for both
    (an overall volume change); otherwise each gets its own (gain staging).
    """
    _check_pair(raw_mel, edit_mel)
    if not 0 < scale_min <= scale_max:
        raise ValueError(f"need 0 < scale_min <= scale_max, got {scale_min} and {scale_max}")
    raw_scale = _uniform(generator, scale_min, scale_max)
    edit_scale = raw_scale if same_on_both else _uniform(generator, scale_min, scale_max)
    return MelPair(raw_mel + math.log(raw_scale), edit_mel + math.log(edit_scale))


def channel_dropout(
    raw_mel: torch.Tensor,
    edit_mel: torch.Tensor,
    *,
    dropout_rate: float,
    fill: str = "mean",
    generator: torch.Generator,
) -> MelPair:
    """A4: drop each mel band with probability ``dropout_rate``, the same bands on raw and edit."""
    _check_pair(raw_mel, edit_mel)
    if not 0 <= dropout_rate <= 1:
        raise ValueError(f"dropout_rate must be in [0, 1], got {dropout_rate}")
    band_mask = torch.rand(raw_mel.shape[0], generator=generator) < dropout_rate  # [M]
    if not band_mask.any():
        return MelPair(raw_mel, edit_mel)
    return MelPair(*(_fill_bands(mel, band_mask, fill) for mel in (raw_mel, edit_mel)))


def _fill_bands(mel: torch.Tensor, band_mask: torch.Tensor, fill: str) -> torch.Tensor:
    return mel.masked_fill(band_mask.to(mel.device)[:, None], _fill_value(mel, fill))  # [M, T]


# ---------------------------------------------------------- category B: frame structure


def chunk_shuffle(
    raw_mel: torch.Tensor,
    edit_mel: torch.Tensor,
    pointers: torch.Tensor,
    *,
    chunk_size: int,
    generator: torch.Generator,
) -> ShuffleResult:
    """B1: put the raw's chunks in a random order and remap the pointers; the edit is kept.

    Chunks are ``chunk_size`` frames, the last one shorter when T_raw is not a multiple.
    With fewer than 2 chunks nothing changes. The remap is one gather, ``old_to_new[pointers]``.
    """
    _check_pair(raw_mel, edit_mel)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    raw_frames = raw_mel.shape[1]
    chunk_count = -(-raw_frames // chunk_size)
    if chunk_count < 2:
        return ShuffleResult(raw_mel, edit_mel, pointers, torch.arange(chunk_count))
    device = raw_mel.device
    chunk_order = torch.randperm(chunk_count, generator=generator)  # [C] old chunk at each new slot
    lengths = torch.full((chunk_count,), chunk_size)  # [C]
    lengths[-1] = raw_frames - chunk_size * (chunk_count - 1)
    moved_lengths = lengths[chunk_order]  # [C]
    moved_new_starts = torch.cumsum(moved_lengths, 0) - moved_lengths  # [C]
    moved_old_starts = chunk_order * chunk_size  # [C]
    frames = torch.arange(raw_frames, device=device)  # [T_raw]
    shift = torch.repeat_interleave((moved_old_starts - moved_new_starts).to(device), moved_lengths.to(device))
    new_to_old = frames + shift  # [T_raw]
    old_to_new = torch.empty_like(new_to_old)  # [T_raw], the inverse permutation
    old_to_new[new_to_old] = frames
    return ShuffleResult(raw_mel.index_select(1, new_to_old), edit_mel, old_to_new[pointers], chunk_order)


def random_crop(
    raw_mel: torch.Tensor,
    edit_mel: torch.Tensor,
    pointers: torch.Tensor,
    *,
    min_len: int,
    max_len: int,
    context_pad: int,
    generator: torch.Generator,
) -> CropResult:
    """B2: keep a window of the edit and the raw frames it points to, plus context.

    The window's length is uniform in [min(min_len, T_edit), min(max_len, T_edit)]; the raw
    keeps [min pointer - a, max pointer + b], clipped to the recording, with a and b drawn
    uniformly in [0, context_pad] (the plan pads by a fixed context_pad; see below why not).
    The raw is cut even when the window is the whole edit. T_edit == 0: nothing changes.
    """
    _check_pair(raw_mel, edit_mel)
    if not 1 <= min_len <= max_len or context_pad < 0:
        raise ValueError(f"need 1 <= min_len <= max_len and context_pad >= 0, got {min_len}, {max_len}, {context_pad}")
    edit_frames = edit_mel.shape[1]
    if edit_frames == 0:
        return CropResult(raw_mel, edit_mel, pointers, edit_start=0, raw_start=0)
    crop_len = _randint(min(min_len, edit_frames), min(max_len, edit_frames), generator)
    edit_start = _randint(0, edit_frames - crop_len, generator)
    kept_pointers = pointers[edit_start : edit_start + crop_len]  # [T_edit']
    lowest, highest = int(kept_pointers.min()), int(kept_pointers.max())
    # Each side's context is drawn in [0, context_pad]: with a fixed pad the first pointed-at
    # frame would always sit context_pad frames in, and a network learns that offset from
    # positions instead of matching content (seen in training: pointers of "100 + t").
    raw_start = max(0, lowest - _randint(0, context_pad, generator))
    raw_end = min(raw_mel.shape[1], highest + _randint(0, context_pad, generator) + 1)
    # Pointers lie in [0, T_raw), so [lowest, highest] is inside [raw_start, raw_end).
    assert raw_start <= lowest and highest < raw_end, (raw_start, lowest, highest, raw_end)
    return CropResult(
        raw_mel[:, raw_start:raw_end],
        edit_mel[:, edit_start : edit_start + crop_len],
        kept_pointers - raw_start,
        edit_start=edit_start,
        raw_start=raw_start,
    )


def concatenate_samples(first: PointerSample, second: PointerSample) -> PointerSample:
    """B3: ``first`` then ``second``; the second's pointers are shifted by first's T_raw.

    Weights: concatenated when either sample has them, with weight 1 for the other.
    """
    if first.mel_bins != second.mel_bins:
        raise ValueError(f"cannot concatenate samples with {first.mel_bins} and {second.mel_bins} mel bins")
    weights = None
    if first.weights is not None or second.weights is not None:
        weights = torch.cat([_weights_or_ones(first), _weights_or_ones(second)])
    return PointerSample(
        raw_mel=torch.cat([first.raw_mel, second.raw_mel], dim=1),
        edit_mel=torch.cat([first.edit_mel, second.edit_mel], dim=1),
        pointers=torch.cat([first.pointers, second.pointers + first.raw_frames]),
        weights=weights,
    )


def _weights_or_ones(sample: PointerSample) -> torch.Tensor:
    if sample.weights is not None:
        return sample.weights
    return torch.ones(sample.edit_frames, dtype=torch.float32, device=sample.edit_mel.device)


# ---------------------------------------------------------------------------- config


def _fail(path: str, message: str) -> NoReturn:
    raise ConfigError(f"{path}: {message}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_bool(path: str, value: Any) -> None:
    if not isinstance(value, bool):
        _fail(path, f"must be true or false, got {value!r}")


def _check_int(path: str, value: Any, *, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        _fail(path, f"must be an integer, got {value!r}")
    if value < minimum:
        _fail(path, f"must be ≥ {minimum}, got {value}")


def _check_number(
    path: str, value: Any, *, minimum: float, maximum: float = math.inf, open_minimum: bool = False
) -> None:
    if not _is_number(value) or math.isnan(value):
        _fail(path, f"must be a number, got {value!r}")
    if value < minimum or (open_minimum and value == minimum):
        _fail(path, f"must be {'>' if open_minimum else '≥'} {minimum}, got {value}")
    if value > maximum:
        _fail(path, f"must be ≤ {maximum}, got {value}")


def _check_choice(path: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        _fail(path, f"must be one of {list(choices)}, got {value!r}")


class _Section:
    """What every augmentation section shares: a key path, ``enabled`` and ``probability``."""

    name: ClassVar[str]

    def _path(self, key: str) -> str:
        return f"augmentation.{self.name}.{key}"

    def _check_switch(self) -> None:
        _check_bool(self._path("enabled"), self.enabled)
        _check_number(self._path("probability"), self.probability, minimum=0.0, maximum=1.0)

    def _check_order(self, low_key: str, high_key: str) -> None:
        low, high = getattr(self, low_key), getattr(self, high_key)
        if high < low:
            _fail(self._path(high_key), f"must be ≥ {low_key} ({high} < {low})")


@dataclass(frozen=True)
class NoiseConfig(_Section):
    """A1. ``level_*``: noise std relative to the mel's std."""

    name: ClassVar[str] = "noise"
    enabled: bool = True
    probability: float = 0.5
    level_min: float = 0.05
    level_max: float = 0.15
    same_on_both: bool = False

    def __post_init__(self) -> None:
        self._check_switch()
        _check_number(self._path("level_min"), self.level_min, minimum=0.0)
        _check_number(self._path("level_max"), self.level_max, minimum=0.0)
        self._check_order("level_min", "level_max")
        _check_bool(self._path("same_on_both"), self.same_on_both)


@dataclass(frozen=True)
class GainConfig(_Section):
    """A3. ``scale_*``: linear amplitude factors, applied as ``+ log(scale)`` to log-mels."""

    name: ClassVar[str] = "gain"
    enabled: bool = True
    probability: float = 0.5
    scale_min: float = 0.7
    scale_max: float = 1.3
    same_on_both: bool = False

    def __post_init__(self) -> None:
        self._check_switch()
        _check_number(self._path("scale_min"), self.scale_min, minimum=0.0, open_minimum=True)
        _check_number(self._path("scale_max"), self.scale_max, minimum=0.0, open_minimum=True)
        self._check_order("scale_min", "scale_max")
        _check_bool(self._path("same_on_both"), self.same_on_both)


@dataclass(frozen=True)
class ChannelDropoutConfig(_Section):
    """A4. ``dropout_rate``: probability of dropping each mel band."""

    name: ClassVar[str] = "channel_dropout"
    enabled: bool = True
    probability: float = 0.3
    dropout_rate: float = 0.1
    fill: str = "mean"

    def __post_init__(self) -> None:
        self._check_switch()
        _check_number(self._path("dropout_rate"), self.dropout_rate, minimum=0.0, maximum=1.0)
        _check_choice(self._path("fill"), self.fill, FILLS)


@dataclass(frozen=True)
class SpecAugmentConfig(_Section):
    """A2. Widths are maxima: mel bins for ``freq_width``, frames for ``time_width``."""

    name: ClassVar[str] = "spec_augment"
    enabled: bool = True
    probability: float = 0.5
    freq_masks: int = 2
    freq_width: int = 20
    time_masks: int = 2
    time_width: int = 50
    fill: str = "mean"

    def __post_init__(self) -> None:
        self._check_switch()
        for key in ("freq_masks", "freq_width", "time_masks", "time_width"):
            _check_int(self._path(key), getattr(self, key), minimum=0)
        _check_choice(self._path("fill"), self.fill, FILLS)


@dataclass(frozen=True)
class CropConfig(_Section):
    """B2. Lengths in edit frames; ``context_pad`` in raw frames each side."""

    name: ClassVar[str] = "crop"
    enabled: bool = True
    probability: float = 0.5
    min_len: int = 500
    max_len: int = 5000
    context_pad: int = 100

    def __post_init__(self) -> None:
        self._check_switch()
        _check_int(self._path("min_len"), self.min_len, minimum=1)
        _check_int(self._path("max_len"), self.max_len, minimum=1)
        self._check_order("min_len", "max_len")
        _check_int(self._path("context_pad"), self.context_pad, minimum=0)


@dataclass(frozen=True)
class ChunkShuffleConfig(_Section):
    """B1. ``chunk_size`` in raw frames."""

    name: ClassVar[str] = "chunk_shuffle"
    enabled: bool = True
    probability: float = 0.3
    chunk_size: int = 1000

    def __post_init__(self) -> None:
        self._check_switch()
        _check_int(self._path("chunk_size"), self.chunk_size, minimum=1)


@dataclass(frozen=True)
class ConcatenationConfig(_Section):
    """B3, per batch. ``max_frames`` caps both the joined raw and the joined edit (memory);
    ``pairing`` picks neighbours at random or after sorting by edit length."""

    name: ClassVar[str] = "concatenation"
    enabled: bool = False
    probability: float = 0.2
    max_frames: int = 6000
    pairing: str = "random"

    def __post_init__(self) -> None:
        self._check_switch()
        _check_int(self._path("max_frames"), self.max_frames, minimum=1)
        _check_choice(self._path("pairing"), self.pairing, PAIRINGS)


_SECTIONS: dict[str, type[_Section]] = {
    section.name: section
    for section in (
        NoiseConfig,
        GainConfig,
        ChannelDropoutConfig,
        SpecAugmentConfig,
        CropConfig,
        ChunkShuffleConfig,
        ConcatenationConfig,
    )
}


@dataclass(frozen=True)
class AugmentationConfig:
    """The plan's ``"augmentation"`` JSON section (same keys), plus ``warmup_epochs``:
    epochs before that number see unaugmented samples (the plan's warm-up mitigation)."""

    enabled: bool = True
    warmup_epochs: int = 0
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    gain: GainConfig = field(default_factory=GainConfig)
    channel_dropout: ChannelDropoutConfig = field(default_factory=ChannelDropoutConfig)
    spec_augment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    crop: CropConfig = field(default_factory=CropConfig)
    chunk_shuffle: ChunkShuffleConfig = field(default_factory=ChunkShuffleConfig)
    concatenation: ConcatenationConfig = field(default_factory=ConcatenationConfig)

    def __post_init__(self) -> None:
        _check_bool("augmentation.enabled", self.enabled)
        _check_int("augmentation.warmup_epochs", self.warmup_epochs, minimum=0)
        for name, section_class in _SECTIONS.items():
            if not isinstance(getattr(self, name), section_class):
                _fail(f"augmentation.{name}", f"must be a {section_class.__name__}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> AugmentationConfig:
        """Build from the section itself or from ``{"augmentation": {...}}``; missing keys
        take their defaults, an unknown key or a bad value raises ``ConfigError``."""
        if isinstance(values, Mapping) and set(values) == {"augmentation"}:
            values = values["augmentation"]
        _check_keys("augmentation", values, {item.name for item in fields(cls)})
        built = {key: value for key, value in values.items() if key not in _SECTIONS}
        for name, section_class in _SECTIONS.items():
            if name in values:
                section = values[name]
                _check_keys(f"augmentation.{name}", section, {item.name for item in fields(section_class)})
                built[name] = section_class(**section)
        return cls(**built)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> AugmentationConfig:
        try:
            values = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"augmentation config {path} does not exist") from None
        except json.JSONDecodeError as error:
            raise ConfigError(f"augmentation config {path} is not valid JSON (line {error.lineno}: {error.msg})") from None
        return cls.from_dict(values)

    def to_dict(self) -> dict:
        """The section as plain JSON values (without the ``"augmentation"`` wrapper)."""
        return asdict(self)


def _check_keys(path: str, values: Any, known: set[str]) -> None:
    if not isinstance(values, Mapping):
        _fail(path, f"must be a JSON object, got {type(values).__name__}")
    unknown = sorted(set(values) - known)
    if unknown:
        names = ", ".join(repr(key) for key in unknown)
        _fail(path, f"unknown key{'s' if len(unknown) > 1 else ''} {names}; known keys are {sorted(known)}")


# ------------------------------------------------------------------------- augmentor


class Augmentor:
    """Applies the enabled augmentations, each with its probability, reproducibly.

    ``augmentor(sample, epoch=e, index=i)`` depends on (seed, e, i) only. Order: B2 crop
    (first, so that the rest works on fewer frames), B1 chunk shuffle, then A3 gain, A1
    noise, A4 channel dropout, A2 frequency and time masks. Before ``warmup_epochs`` or
    with ``enabled`` false, samples come back as they are (the same objects).
    """

    def __init__(self, config: AugmentationConfig, *, seed: int) -> None:
        self.config = config
        self.seed = seed

    def active(self, epoch: int) -> bool:
        return self.config.enabled and epoch >= self.config.warmup_epochs

    def __call__(self, sample: PointerSample, *, epoch: int, index: int) -> PointerSample:
        if not self.active(epoch):
            return sample
        config = self.config
        generator = _seeded_generator(self.seed, "sample", epoch, index)
        raw_mel, edit_mel, pointers, weights = sample.raw_mel, sample.edit_mel, sample.pointers, sample.weights
        if _chosen(config.crop, generator):
            crop = random_crop(
                raw_mel,
                edit_mel,
                pointers,
                min_len=config.crop.min_len,
                max_len=config.crop.max_len,
                context_pad=config.crop.context_pad,
                generator=generator,
            )
            raw_mel, edit_mel, pointers = crop.raw_mel, crop.edit_mel, crop.pointers
            if weights is not None:
                weights = weights[crop.edit_start : crop.edit_start + edit_mel.shape[1]]
        if _chosen(config.chunk_shuffle, generator):
            shuffled = chunk_shuffle(
                raw_mel, edit_mel, pointers, chunk_size=config.chunk_shuffle.chunk_size, generator=generator
            )
            raw_mel, pointers = shuffled.raw_mel, shuffled.pointers
        if _chosen(config.gain, generator):
            raw_mel, edit_mel = apply_gain(
                raw_mel,
                edit_mel,
                scale_min=config.gain.scale_min,
                scale_max=config.gain.scale_max,
                same_on_both=config.gain.same_on_both,
                generator=generator,
            )
        if _chosen(config.noise, generator):
            raw_mel, edit_mel = add_noise(
                raw_mel,
                edit_mel,
                level_min=config.noise.level_min,
                level_max=config.noise.level_max,
                same_on_both=config.noise.same_on_both,
                generator=generator,
            )
        if _chosen(config.channel_dropout, generator):
            raw_mel, edit_mel = channel_dropout(
                raw_mel,
                edit_mel,
                dropout_rate=config.channel_dropout.dropout_rate,
                fill=config.channel_dropout.fill,
                generator=generator,
            )
        if _chosen(config.spec_augment, generator):
            spec = config.spec_augment
            raw_mel, edit_mel = freq_mask(
                raw_mel, edit_mel, num_masks=spec.freq_masks, max_width=spec.freq_width, fill=spec.fill, generator=generator
            )
            raw_mel, edit_mel = time_mask(
                raw_mel, edit_mel, num_masks=spec.time_masks, max_width=spec.time_width, fill=spec.fill, generator=generator
            )
        # PointerSample checks the pointers again: the plan's "validate after each augmentation".
        return PointerSample(raw_mel, edit_mel, pointers, weights)

    def concatenate(self, samples: list[PointerSample], *, epoch: int, batch_index: int) -> list[PointerSample]:
        """B3 in the collate step: with the section's probability (one draw per batch), join
        neighbours pairwise when the joined raw and edit both stay within ``max_frames``.

        ``pairing="random"`` pairs in a random order; ``"similar_length"`` sorts by edit
        length first (ties in random order). A sample that fits with neither neighbour is
        kept alone. The result lists samples in the pairing order.
        """
        section = self.config.concatenation
        if not self.active(epoch) or not section.enabled or len(samples) < 2:
            return list(samples)
        generator = _seeded_generator(self.seed, "batch", epoch, batch_index)
        if _uniform(generator) >= section.probability:
            return list(samples)
        order = torch.randperm(len(samples), generator=generator).tolist()
        if section.pairing == "similar_length":
            order.sort(key=lambda position: samples[position].edit_frames)  # stable: ties stay random
        joined, position = [], 0
        while position < len(order):
            first = samples[order[position]]
            if position + 1 < len(order):
                second = samples[order[position + 1]]
                if (
                    first.raw_frames + second.raw_frames <= section.max_frames
                    and first.edit_frames + second.edit_frames <= section.max_frames
                ):
                    joined.append(concatenate_samples(first, second))
                    position += 2
                    continue
            joined.append(first)
            position += 1
        return joined


def _chosen(section: _Section, generator: torch.Generator) -> bool:
    return section.enabled and _uniform(generator) < section.probability
