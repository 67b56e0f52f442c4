"""Dynamic-programming alignment of an edit to its raw recording, and edit decision lists.

Shape letters: M mel bins, R raw frames (T_raw), E edit frames (T_edit), N rows of a block.

An edit is made of raw spans played in some order, so for every edit frame there is one
raw frame it came from: its *pointer*. Without a model, the pointers are the best path
through a frame-similarity matrix ``score [E, R]`` (higher is better) where each step from
edit frame ``j - 1`` to ``j`` either

- continues, ``p -> p + 1``, for free (playback goes on);
- stays, ``p -> p``, for ``stay_penalty`` (a held or stretched frame);
- jumps anywhere, for ``jump_penalty`` (a cut, a repeat or a reorder).

The best jump into row ``j`` always leaves from the previous row's best cell, so a row's
jump source is one integer and the choice at a cell is "continued or not": one bit per
cell, packed eight to a byte (``E * R / 8`` bytes; 110 MB for 10 minutes against 10 minutes
at 50 frames/s). When stays are cheaper than jumps, "not continued" still has two
possible sources; the backtrack settles it from the cumulative scores of that row,
recomputed from a checkpoint saved at the start of its block of rows (one more pass over
at most the blocks where that happens). The score matrix is never held whole: rows come a
block at a time, from a matrix or computed on the fly from the mels (``align``).

An edit decision list (EDL) is the list of raw segments in play order; it converts to and
from pointers at a frame rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from jingle.core.config import fail

# Rows of the score matrix computed and scanned at a time: a block is [N, R] float32, so
# 256 rows of a 10-minute recording (30k frames) are 31 MB.
DEFAULT_BLOCK_ROWS = 256

# Rounding seconds to frames moves each end of an EDL segment by up to a frame, and the
# edit's last frame may be partial.
EDL_FRAMES_PER_SEGMENT = 2

RowBlock = Callable[[int, int], np.ndarray]  # (first row, stop row) -> score rows [N, R]


@dataclass(frozen=True)
class AlignmentConfig:
    """How ``align`` scores paths; penalties are in units of cosine similarity per frame.

    Attributes:
        jump_penalty: cost of any move other than continuing (cut, repeat, reorder).
        stay_penalty: cost of pointing at the same raw frame again.
        confidence_radius: raw frames either side of a pointer that count as the same
            place when measuring confidence.
        temperature: softmax temperature over a row's similarities for confidence.
        block_rows: edit frames whose similarities are computed at a time (memory).
    """

    jump_penalty: float = 6.0
    stay_penalty: float = 1.0
    confidence_radius: int = 2
    temperature: float = 0.01
    block_rows: int = DEFAULT_BLOCK_ROWS

    def __post_init__(self) -> None:
        if not (math.isfinite(self.jump_penalty) and self.jump_penalty >= 0):
            fail("jump_penalty", f"must be a finite number >= 0, got {self.jump_penalty}")
        if not (math.isfinite(self.stay_penalty) and self.stay_penalty >= 0):
            fail("stay_penalty", f"must be a finite number >= 0, got {self.stay_penalty}")
        if self.confidence_radius < 0:
            fail("confidence_radius", f"must be >= 0 frames, got {self.confidence_radius}")
        if not self.temperature > 0:
            fail("temperature", f"must be positive, got {self.temperature}")
        if self.block_rows < 1:
            fail("block_rows", f"must be at least 1, got {self.block_rows}")


@dataclass
class Alignment:
    """Result of ``align``.

    Attributes:
        pointers: [E] int64, the raw frame each edit frame came from.
        confidence: [E] float32 in [0, 1], softmax mass near the chosen raw frame.
        score: the path's similarity minus penalties, per edit frame (about 1 for a clean
            edit, near 0 for unrelated audio).
    """

    pointers: np.ndarray
    confidence: np.ndarray
    score: float


# ------------------------------------------------------------------------ similarity


def _unit_frames(mel: np.ndarray) -> np.ndarray:
    """Log-mel [M, T] -> frames [T, M] centred over mel bins and scaled to unit length.

    Centring removes a gain (an additive shift of every bin of a log-mel frame); a silent
    frame (all bins at the log floor) becomes the zero vector, similar to nothing.
    """
    if mel.ndim != 2:
        raise ValueError(f"expected a log-mel [M, T], got shape {mel.shape}")
    frames = mel.T.astype(np.float32)  # [T, M]
    frames = frames - frames.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(frames, axis=1, keepdims=True)
    return frames / np.maximum(norms, 1e-6)


def frame_similarity(raw_mel: np.ndarray, edit_mel: np.ndarray) -> np.ndarray:
    """Cosine similarity of mean-centred log-mel frames: [M, R], [M, E] -> [E, R] float32.

    Holds the whole matrix; ``align`` computes the same values a block of rows at a time.
    """
    _check_mels(raw_mel, edit_mel)
    return _unit_frames(edit_mel) @ _unit_frames(raw_mel).T  # [E, R]


def _check_mels(raw_mel: np.ndarray, edit_mel: np.ndarray) -> None:
    if raw_mel.ndim != 2 or edit_mel.ndim != 2 or raw_mel.shape[0] != edit_mel.shape[0]:
        raise ValueError(f"expected log-mels [M, T_raw] and [M, T_edit] with the same M, got {raw_mel.shape} and {edit_mel.shape}")


# --------------------------------------------------------------------------- viterbi


def viterbi(
    score: np.ndarray, *, jump_penalty: float, stay_penalty: float, block_rows: int = DEFAULT_BLOCK_ROWS
) -> np.ndarray:
    """Best path through any score matrix (similarities, or a network's log-probabilities).

    Args:
        score: [E, R], higher is better; the path's value is the sum of its cells minus
            the penalties of its moves (continue free, stay ``stay_penalty``, jump
            ``jump_penalty``; the first frame may start anywhere).
        block_rows: rows between the checkpoints a backtrack may recompute from.

    Returns:
        pointers [E] int64, each in ``[0, R)``.
    """
    if score.ndim != 2:
        raise ValueError(f"viterbi expects a score matrix [T_edit, T_raw], got shape {score.shape}")
    if score.shape[0] and not score.shape[1]:
        raise ValueError(f"viterbi needs at least one raw frame, got a score matrix of shape {score.shape}")
    pointers, _ = _best_path(
        lambda first, stop: score[first:stop],
        score.shape,
        jump_penalty=jump_penalty,
        stay_penalty=stay_penalty,
        block_rows=block_rows,
    )
    return pointers


def _step(previous: np.ndarray, score_row: np.ndarray, jump_penalty: float, stay_penalty: float) -> tuple[np.ndarray, np.ndarray, float]:
    """One row of the recursion.

    ``previous`` [R] holds the best path values ending at each raw frame of the last row,
    minus their maximum (so 0 at its argmax: values stay small and float32 stays exact
    enough over any length). Returns the new row in the same form, whether each cell was
    reached by continuing, and the maximum that was subtracted.
    """
    continued_value = np.empty_like(previous)
    continued_value[0] = -np.inf
    continued_value[1:] = previous[:-1]
    # The best jump leaves the previous row's maximum, which is 0 here.
    other_value = np.maximum(previous - stay_penalty, np.float32(-jump_penalty))
    continued = continued_value >= other_value
    current = np.where(continued, continued_value, other_value) + score_row
    peak = float(current.max())
    current -= peak
    return current, continued, peak


def _best_path(
    rows: RowBlock, shape: tuple[int, int], *, jump_penalty: float, stay_penalty: float, block_rows: int
) -> tuple[np.ndarray, float]:
    """Viterbi over score rows delivered a block at a time.

    Returns:
        pointers [E] int64 and the path's value (sum of scores minus penalties).
    """
    edit_frames, raw_frames = shape
    if edit_frames == 0:
        return np.zeros(0, dtype=np.int64), 0.0
    continued_bits = np.empty((edit_frames, (raw_frames + 7) // 8), dtype=np.uint8)  # [E, R/8]
    jump_source = np.zeros(edit_frames, dtype=np.int64)  # argmax of the previous row
    checkpoints = []  # previous row at the start of each block (None for the first)
    previous = None
    total = 0.0
    for first in range(0, edit_frames, block_rows):
        block = np.asarray(rows(first, min(first + block_rows, edit_frames)), dtype=np.float32)  # [N, R]
        checkpoints.append(None if previous is None else previous.copy())
        for offset, score_row in enumerate(block):
            row = first + offset
            if previous is None:
                peak = float(score_row.max())
                previous = score_row - peak
                continued = np.zeros(raw_frames, dtype=bool)
            else:
                jump_source[row] = int(np.argmax(previous))
                previous, continued, peak = _step(previous, score_row, jump_penalty, stay_penalty)
            continued_bits[row] = np.packbits(continued)
            total += peak

    # Without cheaper stays, a cell not reached by continuing was reached by the jump
    # (a stay can only tie with it, from a cell that is also a row maximum).
    stays_can_win = stay_penalty < jump_penalty
    recomputed_block, recomputed_rows = -1, None
    pointers = np.empty(edit_frames, dtype=np.int64)
    position = int(np.argmax(previous))
    for row in range(edit_frames - 1, -1, -1):
        pointers[row] = position
        if row == 0:
            break
        if continued_bits[row, position >> 3] >> (7 - (position & 7)) & 1:
            position -= 1
            continue
        source = int(jump_source[row])
        if position == source or not stays_can_win:
            position = source
            continue
        block_index = (row - 1) // block_rows
        if block_index != recomputed_block:
            recomputed_block = block_index
            recomputed_rows = _replay_block(rows, block_index, block_rows, checkpoints, shape, jump_penalty, stay_penalty)
        value_there = recomputed_rows[(row - 1) - block_index * block_rows, position]
        if value_there - stay_penalty < -jump_penalty:
            position = source
    return pointers, total


def _replay_block(
    rows: RowBlock,
    block_index: int,
    block_rows: int,
    checkpoints: list,
    shape: tuple[int, int],
    jump_penalty: float,
    stay_penalty: float,
) -> np.ndarray:
    """The forward pass's rows of one block again, from its checkpoint: [N, R]."""
    first = block_index * block_rows
    block = np.asarray(rows(first, min(first + block_rows, shape[0])), dtype=np.float32)  # [N, R]
    out = np.empty_like(block)
    previous = checkpoints[block_index]
    for offset, score_row in enumerate(block):
        if previous is None:
            previous = score_row - float(score_row.max())
        else:
            previous, _, _ = _step(previous, score_row, jump_penalty, stay_penalty)
        out[offset] = previous
    return out


# ------------------------------------------------------------------------ confidence


def frame_confidence(score: np.ndarray, pointers: np.ndarray, *, radius: int, temperature: float) -> np.ndarray:
    """Softmax of each score row over raw frames, mass within ``radius`` of the pointer.

    Args:
        score: [E, R]; pointers: [E].

    Returns:
        [E] float32 in [0, 1]: near 1 where the row has one clear match at the pointer.
    """
    if score.ndim != 2 or len(pointers) != score.shape[0]:
        raise ValueError(f"expected score [T_edit, T_raw] and one pointer per row, got {score.shape} and {len(pointers)} pointers")
    return _confidence(lambda first, stop: score[first:stop], score.shape, pointers, radius, temperature, DEFAULT_BLOCK_ROWS)


def _confidence(
    rows: RowBlock, shape: tuple[int, int], pointers: np.ndarray, radius: int, temperature: float, block_rows: int
) -> np.ndarray:
    edit_frames, raw_frames = shape
    out = np.empty(edit_frames, dtype=np.float32)
    for first in range(0, edit_frames, block_rows):
        stop = min(first + block_rows, edit_frames)
        block = np.asarray(rows(first, stop), dtype=np.float32)  # [N, R]
        weights = np.exp((block - block.max(axis=1, keepdims=True)) / temperature)  # [N, R]
        cumulative = np.zeros((stop - first, raw_frames + 1), dtype=np.float64)  # [N, R + 1]
        np.cumsum(weights, axis=1, out=cumulative[:, 1:])
        low = np.clip(pointers[first:stop] - radius, 0, raw_frames)
        high = np.clip(pointers[first:stop] + radius + 1, 0, raw_frames)
        index = np.arange(stop - first)
        near = cumulative[index, high] - cumulative[index, low]
        out[first:stop] = np.clip(near / cumulative[:, -1], 0.0, 1.0)
    return out


# ------------------------------------------------------------------------- alignment


def align(raw_mel: np.ndarray, edit_mel: np.ndarray, config: AlignmentConfig = AlignmentConfig()) -> Alignment:
    """Pointers of an edit into its raw recording, from their log-mels [M, R] and [M, E].

    Time O(E * R); memory O(E * R / 8) for the backtrack plus a block of similarities.
    """
    _check_mels(raw_mel, edit_mel)
    edit_frames, raw_frames = edit_mel.shape[1], raw_mel.shape[1]
    if edit_frames and not raw_frames:
        raise ValueError(f"cannot align {edit_frames} edit frames to an empty raw recording")
    raw_units, edit_units = _unit_frames(raw_mel), _unit_frames(edit_mel)  # [R, M], [E, M]

    def rows(first: int, stop: int) -> np.ndarray:
        return edit_units[first:stop] @ raw_units.T  # [N, R]

    shape = (edit_frames, raw_frames)
    pointers, total = _best_path(
        rows, shape, jump_penalty=config.jump_penalty, stay_penalty=config.stay_penalty, block_rows=config.block_rows
    )
    confidence = _confidence(rows, shape, pointers, config.confidence_radius, config.temperature, config.block_rows)
    return Alignment(pointers=pointers, confidence=confidence, score=total / max(edit_frames, 1))


# ------------------------------------------------------------------ decision lists


@dataclass(frozen=True)
class Segment:
    """Raw frames ``[raw_start, raw_end)`` played from edit frame ``edit_start``."""

    raw_start: int
    raw_end: int
    edit_start: int
    confidence: float


def segments_from_pointers(
    pointers: np.ndarray, confidence: np.ndarray | None = None, *, tolerance: int = 0
) -> list[Segment]:
    """Runs of continuing pointers, in play order; a new segment starts at every jump.

    Args:
        pointers: [E] raw frame per edit frame.
        confidence: [E] per-frame confidence; a segment gets its mean (1 when None).
        tolerance: a step ``p -> q`` still continues the run when ``|q - (p + 1)| <=
            tolerance`` (for a network's slightly jittery pointers).
    """
    pointers = np.asarray(pointers, dtype=np.int64)
    if pointers.ndim != 1:
        raise ValueError(f"pointers must be 1-D [T_edit], got shape {pointers.shape}")
    if confidence is not None and len(confidence) != len(pointers):
        raise ValueError(f"confidence has {len(confidence)} values for {len(pointers)} pointers")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 frames, got {tolerance}")
    if len(pointers) == 0:
        return []
    breaks = np.flatnonzero(np.abs(np.diff(pointers) - 1) > tolerance) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [len(pointers)]])
    segments = []
    for start, stop in zip(starts.tolist(), stops.tolist()):
        raw_start = int(pointers[start])
        raw_end = max(raw_start + 1, int(pointers[stop - 1]) + 1)
        mean_confidence = 1.0 if confidence is None else float(np.mean(confidence[start:stop]))
        segments.append(Segment(raw_start=raw_start, raw_end=raw_end, edit_start=start, confidence=mean_confidence))
    return segments


def edl_from_pointers(
    pointers: np.ndarray, frame_rate: float, confidence: np.ndarray | None = None, *, tolerance: int = 0
) -> list[dict]:
    """Pointers [E] -> ``[{"start_s", "end_s", "edit_start_s", "confidence"}]`` in play order."""
    if not frame_rate > 0:
        raise ValueError(f"frame_rate must be positive, got {frame_rate}")
    return [
        {
            "start_s": segment.raw_start / frame_rate,
            "end_s": segment.raw_end / frame_rate,
            "edit_start_s": segment.edit_start / frame_rate,
            "confidence": segment.confidence,
        }
        for segment in segments_from_pointers(pointers, confidence, tolerance=tolerance)
    ]


def pointers_from_edl(
    segments_seconds: Sequence[Sequence[float]], frame_rate: float, edit_frames: int | None = None
) -> np.ndarray:
    """``[[raw_start_s, raw_end_s], ...]`` in play order -> pointers [E] int64.

    Segment ends are rounded to frames. With ``edit_frames``, the last segment is trimmed
    or extended to that length when the EDL is within ``EDL_FRAMES_PER_SEGMENT`` frames
    per segment of it.

    Raises:
        ValueError: a malformed segment, or an EDL whose length does not match the edit.
    """
    if not frame_rate > 0:
        raise ValueError(f"frame_rate must be positive, got {frame_rate}")
    pieces = []
    for index, segment in enumerate(segments_seconds):
        if len(segment) != 2:
            raise ValueError(f"EDL segment {index} must be [raw_start_s, raw_end_s], got {segment!r}")
        start, end = round(float(segment[0]) * frame_rate), round(float(segment[1]) * frame_rate)
        if start < 0 or end <= start:
            raise ValueError(f"EDL segment {index} [{segment[0]}, {segment[1]}] s is empty or negative at {frame_rate} frames/s")
        pieces.append(np.arange(start, end, dtype=np.int64))
    pointers = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    if edit_frames is None or len(pointers) == edit_frames:
        return pointers
    allowed = EDL_FRAMES_PER_SEGMENT * len(pieces)
    missing = edit_frames - len(pointers)
    if not pieces or abs(missing) > allowed:
        raise ValueError(
            f"EDL covers {len(pointers)} frames but the edit has {edit_frames} "
            f"(more than {allowed} apart at {frame_rate} frames/s)"
        )
    if missing < 0:
        return pointers[:edit_frames]
    return np.concatenate([pointers, pointers[-1] + 1 + np.arange(missing, dtype=np.int64)])
