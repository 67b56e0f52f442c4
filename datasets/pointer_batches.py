"""Stored pointer rows -> training samples of bounded length, grouped by length.

Shape letters: M mel bins, T frames.

The worker loop streams rows from Ray Data and, per sample: rebuilds the tensors
(``samples_from_rows``), augments them (``datasets/augmentation.py``), caps their lengths
(``cap_lengths``), then ``bucketed`` groups samples of similar length into batches, so a
batch carries little padding. Padding itself is the model's (``models.pointer``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch

from datasets.augmentation import PointerSample


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
