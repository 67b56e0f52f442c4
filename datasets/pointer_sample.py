"""The pointer example, and how stored rows become padded batches of them.

A ``PointerSample`` is one training example of the pointer network: a raw recording's
log-mel spectrogram, its edited version's, and for every edit frame the raw frame it came
from (the pointer). The worker loop streams stored rows from Ray Data and, per sample:
rebuilds the tensors (``samples_from_rows``), augments them (``datasets/augmentation.py``),
caps their lengths (``cap_lengths``); ``bucketed`` groups samples of similar length into
batches, so a batch carries little padding, and ``pad_pointer_samples`` pads a batch into
the model's input (``PointerBatch``).

Shape letters: B batch, M mel bins, T frames (``T_raw`` or Tr of the raw recording,
``T_edit`` or Te of the edit). A sample's mels are ``[M, T]`` float32 (time last),
its pointers ``[T_edit]`` int64 in ``[0, T_raw)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from jingle.core.config import fail

# The models' convention (``models.pointer.PADDED_POINTER``): a negative pointer is padding.
PADDED_POINTER = -1


# ----------------------------------------------------------------------------- a sample


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
            fail("raw_mel", f"and edit_mel mel bins differ: {self.raw_mel.shape[0]} != {self.edit_mel.shape[0]}")
        edit_frames = self.edit_mel.shape[1]
        pointers, weights = self.pointers, self.weights
        if pointers.shape != (edit_frames,) or pointers.dtype != torch.int64:
            fail("pointers", f"must be [T_edit={edit_frames}] int64, got {tuple(pointers.shape)} {pointers.dtype}")
        if edit_frames:
            lowest, highest = int(pointers.min()), int(pointers.max())
            if lowest < 0 or highest >= self.raw_frames:
                fail("pointers", f"must lie in [0, {self.raw_frames}), got [{lowest}, {highest}]")
        if weights is not None and (weights.shape != (edit_frames,) or weights.dtype != torch.float32):
            fail("weights", f"must be [T_edit={edit_frames}] float32, got {tuple(weights.shape)} {weights.dtype}")

    @property
    def mel_bins(self) -> int:
        return self.raw_mel.shape[0]

    @property
    def raw_frames(self) -> int:
        return self.raw_mel.shape[1]

    @property
    def edit_frames(self) -> int:
        return self.edit_mel.shape[1]


# ------------------------------------------------------------------------- padded batches


@dataclass
class PointerBatch:
    """Padded examples for ``PointerNetwork`` and ``PointerLoss``, which take its tensors
    (a model never imports this class: ``models/`` imports no dataset module).

    Attributes:
        raw_mel: [B, M, Tr] float32, zero-padded.
        raw_lengths: [B] int64.
        edit_mel: [B, M, Te] float32, zero-padded.
        edit_lengths: [B] int64.
        pointers: [B, Te] int64, −1 on padding.
        weights: [B, Te] float32 per-frame loss weights, 0 on padding.
        ends: [B] bool, whether an edit's last frame is where the edit really ends (False
            for an edit cut short to fit: no stop target there); None: all True.
    """

    raw_mel: torch.Tensor
    raw_lengths: torch.Tensor
    edit_mel: torch.Tensor
    edit_lengths: torch.Tensor
    pointers: torch.Tensor
    weights: torch.Tensor
    ends: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.ends is None:
            self.ends = torch.ones(self.raw_mel.shape[0], dtype=torch.bool, device=self.raw_mel.device)

    def to(self, device: torch.device | str) -> PointerBatch:
        return PointerBatch(**{name: value.to(device) for name, value in self.__dict__.items()})

    def __len__(self) -> int:
        return self.raw_mel.shape[0]


def pad_pointer_samples(samples: Sequence[Any], *, ends: Sequence[bool] | None = None) -> PointerBatch:
    """Pad samples to one ``PointerBatch``.

    Args:
        samples: objects with ``raw_mel`` [M, Tr], ``edit_mel`` [M, Te] (Te may be 0),
            ``pointers`` [Te] and ``weights`` [Te] or None (1 everywhere), torch tensors
            (a ``PointerSample``, or any object with those attributes).
        ends: per sample, whether its last edit frame is the edit's real end (False for an
            edit cut short); None: all are.
    """
    if not samples:
        raise ValueError("pad_pointer_samples needs at least one sample")
    if ends is not None and len(ends) != len(samples):
        raise ValueError(f"need one end flag per sample, got {len(ends)} for {len(samples)} samples")
    mels = samples[0].raw_mel.shape[0]
    for index, sample in enumerate(samples):
        raw_ok = sample.raw_mel.dim() == 2 and sample.raw_mel.shape[0] == mels
        edit_ok = sample.edit_mel.dim() == 2 and sample.edit_mel.shape[0] == mels
        if not (raw_ok and edit_ok and sample.pointers.shape == (sample.edit_mel.shape[1],)):
            raise ValueError(
                f"sample {index}: need raw_mel [{mels}, Tr], edit_mel [{mels}, Te] and pointers [Te], got "
                f"{tuple(sample.raw_mel.shape)}, {tuple(sample.edit_mel.shape)}, {tuple(sample.pointers.shape)}"
            )
    raw_lengths = torch.tensor([sample.raw_mel.shape[1] for sample in samples], dtype=torch.int64)  # [B]
    edit_lengths = torch.tensor([sample.edit_mel.shape[1] for sample in samples], dtype=torch.int64)  # [B]
    # at least one edit column, so that a batch of empty edits still has a shape the model takes
    batch, raw_frames, edit_frames = len(samples), int(raw_lengths.max()), max(1, int(edit_lengths.max()))
    raw_mel = torch.zeros(batch, mels, raw_frames)
    edit_mel = torch.zeros(batch, mels, edit_frames)
    pointers = torch.full((batch, edit_frames), PADDED_POINTER, dtype=torch.int64)
    weights = torch.zeros(batch, edit_frames)
    for row, sample in enumerate(samples):
        raw_mel[row, :, : sample.raw_mel.shape[1]] = sample.raw_mel
        frames = sample.edit_mel.shape[1]
        edit_mel[row, :, :frames] = sample.edit_mel
        pointers[row, :frames] = sample.pointers
        weights[row, :frames] = 1.0 if sample.weights is None else sample.weights
    end_flags = torch.ones(batch, dtype=torch.bool) if ends is None else torch.tensor([bool(end) for end in ends])  # [B]
    return PointerBatch(raw_mel, raw_lengths, edit_mel, edit_lengths, pointers, weights, end_flags)


# ------------------------------------------------------------- rows, lengths and buckets


def samples_from_rows(batch: dict[str, np.ndarray], *, min_confidence: float = 0.0) -> list[PointerSample]:
    """A numpy batch of stored rows -> samples; edit frames whose alignment confidence is
    under ``min_confidence`` get weight 0 (no loss), the rest their confidence."""
    samples = []
    for index in range(len(batch["raw_frames"])):
        raw_frames, edit_frames = int(batch["raw_frames"][index]), int(batch["edit_frames"][index])
        raw = torch.from_numpy(np.asarray(batch["raw_mel"][index], dtype=np.float32).reshape(-1, raw_frames).copy())  # [M, T_raw]
        edit = torch.from_numpy(np.asarray(batch["edit_mel"][index], dtype=np.float32).reshape(-1, edit_frames).copy())  # [M, T_edit]
        pointers = torch.from_numpy(np.asarray(batch["pointers"][index], dtype=np.int64).copy())
        confidence = torch.from_numpy(np.asarray(batch["confidence"][index], dtype=np.float32).copy())
        weights = torch.where(confidence >= min_confidence, confidence, torch.zeros_like(confidence))
        samples.append(PointerSample(raw, edit, pointers, weights))
    return samples


def cap_lengths(
    sample: PointerSample,
    *,
    max_edit_frames: int,
    max_raw_frames: int,
    keep_start: bool,
    generator: torch.Generator,
) -> tuple[PointerSample, bool]:
    """Cut a sample to at most ``max_edit_frames`` edit and ``max_raw_frames`` raw frames.

    A window of the edit is kept (random, or the beginning with ``keep_start``: edit mode
    learns where an edit starts), and a raw window of ``max_raw_frames`` that holds every
    raw frame the kept edit points at; the edit window halves until such a raw window
    exists. Where the raw window sits around those frames is random (it starts at 0 with
    ``keep_start``): were the pointed-at frames always at the same offset, the network
    would learn that offset from the positions instead of matching content.

    Returns:
        the sample and whether it still ends where the original edit ended (edit mode
        learns to stop only at true ends).
    """
    if sample.edit_frames <= max_edit_frames and sample.raw_frames <= max_raw_frames:
        return sample, True
    raw_length = min(max_raw_frames, sample.raw_frames)
    length = min(max_edit_frames, sample.edit_frames)
    while True:
        edit_start = 0 if keep_start else _randint(0, sample.edit_frames - length, generator)
        kept = sample.pointers[edit_start : edit_start + length]
        low, high = (int(kept.min()), int(kept.max())) if length else (0, 0)
        fits = high < raw_length if keep_start else high - low < raw_length
        if fits or length == 1:
            break
        length = max(1, length // 2)
    if keep_start:
        raw_start = 0
    elif high - low < raw_length:
        raw_start = _randint(max(0, high - raw_length + 1), min(low, sample.raw_frames - raw_length), generator)
    else:  # one edit frame: centre the raw window on it
        raw_start = max(0, min(low - raw_length // 2, sample.raw_frames - raw_length))
    raw_end = raw_start + raw_length
    if keep_start and high >= raw_end:  # a single first frame beyond the window: keep it inside
        raw_start, raw_end = high - raw_length + 1, high + 1
    edit_end = edit_start + length
    weights = sample.weights[edit_start:edit_end] if sample.weights is not None else None
    capped = PointerSample(
        sample.raw_mel[:, raw_start:raw_end],
        sample.edit_mel[:, edit_start:edit_end],
        sample.pointers[edit_start:edit_end] - raw_start,
        weights,
    )
    return capped, edit_end == sample.edit_frames


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """Uniform integer in [low, high] (inclusive)."""
    return low + int(torch.randint(0, high - low + 1, (1,), generator=generator))


def bucketed(
    samples: Iterable[tuple[PointerSample, bool]], *, batch_size: int, bucket_batches: int, generator: torch.Generator
) -> Iterator[list[tuple[PointerSample, bool]]]:
    """Group a stream of samples into batches of similar length.

    ``bucket_batches`` batches' worth is gathered, sorted by length and cut into batches
    whose order is then shuffled; samples that do not fill a batch wait for the next
    gathering, so the stream yields ``floor(samples / batch_size)`` batches in all.
    """
    if batch_size < 1 or bucket_batches < 1:
        raise ValueError(f"batch_size and bucket_batches must be positive, got {batch_size}, {bucket_batches}")
    buffer: list[tuple[PointerSample, bool]] = []

    def flush(final: bool) -> Iterator[list[tuple[PointerSample, bool]]]:
        buffer.sort(key=lambda item: (item[0].raw_frames + item[0].edit_frames))
        count = len(buffer) // batch_size
        batches = [buffer[i * batch_size : (i + 1) * batch_size] for i in range(count)]
        del buffer[: count * batch_size]
        for index in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[index]

    for sample in samples:
        buffer.append(sample)
        if len(buffer) >= batch_size * bucket_batches:
            yield from flush(False)
    yield from flush(True)
