"""Data augmentation for the pointer network (plan 002): functions, and the ``Augmentor``.

A sample (``datasets.pointer_sample.PointerSample``) is a raw recording's log-mel
spectrogram, its edited version's, and for every edit frame the raw frame it came from
(the pointer). Shape letters: M mel bins, T frames (``T_raw`` of the raw recording,
``T_edit`` of the edit), C chunks. Mels are ``[M, T]`` float32 (time last, as in the
plan), pointers ``[T_edit]`` int64 in ``[0, T_raw)``. The config sections are in
``datasets/augmentation_config.py``.

Category A changes mel values only; frame counts and pointers are untouched:

- A1 ``add_noise``: Gaussian noise of std ``level * mel.std()``, the level drawn in
  ``[level_min, level_max]``. By default raw and edit get different levels and draws
  (different recording conditions); ``same_on_both`` gives the same level and the same
  noise pattern on the frames they share.
- A2 ``freq_mask`` / ``time_mask`` (SpecAugment; ``spec_augment`` does both, as the
  config's one section): the same mel bands, and the same frame
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

Each enabled config section becomes a ``Transform``, ``transform(sample, generator) ->
sample``: its function with the section's keys as keyword arguments, applied with the
section's probability. The ``Augmentor`` holds the enabled ones in their order and runs
them in turn.

Seeding: every function takes an explicit ``torch.Generator`` (CPU); nothing reads the
global RNG. ``Augmentor`` seeds one generator per sample from ``(seed, epoch, index)`` and
one per batch from ``(seed, epoch, batch_index)``, so an output depends on those numbers
only, never on call order or on other samples. Inputs are never modified in place;
outputs may be views of them.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import torch

from jingle.datasets.augmentation_config import FILLS, AugmentationConfig
from jingle.datasets.pointer_sample import PointerSample


# ----------------------------------------------------------------------------- results


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


def _spans(length: int, count: int, widest: int, generator: torch.Generator) -> torch.Tensor:
    """[length] bool, True on ``count`` spans of 1..``widest`` positions (drawn width, then start)."""
    mask = torch.zeros(length, dtype=torch.bool)
    for _ in range(count):
        width = _randint(1, widest, generator)
        start = _randint(0, length - width, generator)
        mask[start : start + width] = True
    return mask


def _check_pair(raw_mel: torch.Tensor, edit_mel: torch.Tensor) -> None:
    if raw_mel.ndim != 2 or edit_mel.ndim != 2 or raw_mel.shape[0] != edit_mel.shape[0]:
        raise ValueError(f"expected mels [M, T_raw] and [M, T_edit], got {tuple(raw_mel.shape)} and {tuple(edit_mel.shape)}")


# ------------------------------------------------------------- category A: values only


def add_noise(
    raw_mel: torch.Tensor, edit_mel: torch.Tensor, *, level_min: float, level_max: float, same_on_both: bool = False,
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
    raw_mel: torch.Tensor, edit_mel: torch.Tensor, *, num_masks: int, max_width: int, fill: str = "mean",
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
    band_mask = _spans(mel_bins, num_masks, widest, generator)  # [M]
    return MelPair(*(_fill_bands(mel, band_mask, fill) for mel in (raw_mel, edit_mel)))


def time_mask(
    raw_mel: torch.Tensor, edit_mel: torch.Tensor, *, num_masks: int, max_width: int, fill: str = "mean",
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
    frame_mask = _spans(length, num_masks, widest, generator)  # [L]
    masked = []
    for mel in (raw_mel, edit_mel):
        frames_masked = frame_mask[: mel.shape[1]].to(mel.device)  # [T]
        masked.append(mel.masked_fill(frames_masked[None, :], _fill_value(mel, fill)))
    return MelPair(*masked)


def spec_augment(
    raw_mel: torch.Tensor, edit_mel: torch.Tensor, *, freq_masks: int, freq_width: int, time_masks: int, time_width: int,
    fill: str = "mean", generator: torch.Generator,
) -> MelPair:
    """A2 as the config's one section: ``freq_mask``, then ``time_mask``, with one fill."""
    raw_mel, edit_mel = freq_mask(
        raw_mel, edit_mel, num_masks=freq_masks, max_width=freq_width, fill=fill, generator=generator
    )
    return time_mask(raw_mel, edit_mel, num_masks=time_masks, max_width=time_width, fill=fill, generator=generator)


def apply_gain(
    raw_mel: torch.Tensor, edit_mel: torch.Tensor, *, scale_min: float, scale_max: float, same_on_both: bool = False,
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
    raw_mel: torch.Tensor, edit_mel: torch.Tensor, *, dropout_rate: float, fill: str = "mean", generator: torch.Generator,
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


# ------------------------------------------------------------------------ transforms


def crop_sample(sample: PointerSample, generator: torch.Generator, **options: Any) -> PointerSample:
    """B2 on a sample (``random_crop`` with ``options``); the weights move with the edit frames."""
    crop = random_crop(sample.raw_mel, sample.edit_mel, sample.pointers, **options, generator=generator)
    weights = None if sample.weights is None else sample.weights[crop.edit_start : crop.edit_start + crop.edit_mel.shape[1]]
    return PointerSample(crop.raw_mel, crop.edit_mel, crop.pointers, weights)


def shuffle_sample(sample: PointerSample, generator: torch.Generator, **options: Any) -> PointerSample:
    """B1 on a sample (``chunk_shuffle`` with ``options``); the edit and its weights stay."""
    shuffled = chunk_shuffle(sample.raw_mel, sample.edit_mel, sample.pointers, **options, generator=generator)
    return PointerSample(shuffled.raw_mel, sample.edit_mel, shuffled.pointers, sample.weights)


def augment_mels(
    augment: Callable[..., MelPair], sample: PointerSample, generator: torch.Generator, **options: Any
) -> PointerSample:
    """A category-A function on a sample: the mels change, pointers and weights stay."""
    raw_mel, edit_mel = augment(sample.raw_mel, sample.edit_mel, **options, generator=generator)
    return PointerSample(raw_mel, edit_mel, sample.pointers, sample.weights)


# Config section -> its augmentation, ``augment(sample, generator, **section.options())``,
# in the order they apply: B2 crop first (the rest then works on fewer frames), B1 chunk
# shuffle, then A3 gain, A1 noise, A4 channel dropout, A2 frequency and time masks.
# B3 joins samples and is the augmentor's ``concatenate``.
AUGMENTATIONS: dict[str, Callable[..., PointerSample]] = {
    "crop": crop_sample,
    "chunk_shuffle": shuffle_sample,
    "gain": partial(augment_mels, apply_gain),
    "noise": partial(augment_mels, add_noise),
    "channel_dropout": partial(augment_mels, channel_dropout),
    "spec_augment": partial(augment_mels, spec_augment),
}


@dataclass(frozen=True)
class Transform:
    """One enabled config section, ``transform(sample, generator) -> sample``: one draw from
    ``generator`` decides, with ``probability``, whether ``augment`` runs (with ``options``
    as keyword arguments); when it does not, the sample comes back as it is."""

    probability: float
    augment: Callable[..., PointerSample]
    options: Mapping[str, Any]

    def __call__(self, sample: PointerSample, generator: torch.Generator) -> PointerSample:
        if _uniform(generator) >= self.probability:
            return sample
        return self.augment(sample, generator, **self.options)


def build_transforms(config: AugmentationConfig) -> list[Transform]:
    """The enabled sections' transforms, in the order they apply (``AUGMENTATIONS``)."""
    sections = [(getattr(config, name), augment) for name, augment in AUGMENTATIONS.items()]
    return [Transform(section.probability, augment, section.options()) for section, augment in sections if section.enabled]


# ------------------------------------------------------------------------- augmentor


class Augmentor:
    """Applies the enabled augmentations, each with its probability, reproducibly.

    ``augmentor(sample, epoch=e, index=i)`` depends on (seed, e, i) only: it runs its
    ``transforms`` in turn on one generator seeded from them. Before ``warmup_epochs``, with
    ``enabled`` false, or when no transform runs, a sample comes back as it is (the same
    object). A transform that runs builds a new ``PointerSample``, which checks the
    pointers: the plan's "validate after each augmentation".
    """

    def __init__(self, config: AugmentationConfig, *, seed: int) -> None:
        self.config = config
        self.seed = seed
        self.transforms = build_transforms(config)

    def active(self, epoch: int) -> bool:
        return self.config.enabled and epoch >= self.config.warmup_epochs

    def __call__(self, sample: PointerSample, *, epoch: int, index: int) -> PointerSample:
        if not self.active(epoch):
            return sample
        generator = _seeded_generator(self.seed, "sample", epoch, index)
        for transform in self.transforms:
            sample = transform(sample, generator)
        return sample

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
