"""Audio I/O: read any WAV that libsndfile reads, as mono at a codec's rate, cut it
into fixed windows, and keep what a model writes within full scale (``limit_peak``).

Shape letters: S samples, C channels, N segments.

WAV files are read with ``soundfile`` (libsndfile), resampled with torchaudio. Two checks
cover what libsndfile lets through: ``probe`` compares the byte count that a WAV header
declares for its audio with what the file holds, and ``read_mono`` compares the frames it
actually read with the header's count.

A recording of any length is read with ``stream_mono`` (blocks of mono at the codec's
rate, resampled as they come: ``StreamingResampler``) and cut with ``cut_stream``, so that
memory does not grow with the file; ``read_mono`` joins the same blocks for a short clip.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import numpy as np
import soundfile

from jingle.core.config import fail
from jingle.datasets.resampling import StreamingResampler, resampled_length

# File frames read at a time: what a reader holds besides its output (6 s at 44.1 kHz).
READ_BLOCK_FRAMES = 1 << 18


class AudioError(ValueError):
    """A file that cannot be used; the message is the reason shown in rejects."""


@dataclass(frozen=True)
class AudioInfo:
    path: str
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def probe(path: str | os.PathLike) -> AudioInfo:
    """Read a file's header (cheap: no samples are decoded).

    Raises:
        AudioError: unreadable, not audio, empty, or truncated.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise AudioError("file does not exist") from None
    except OSError as error:
        raise AudioError(f"cannot read file: {error.strerror or error}") from None
    if path.is_dir():
        raise AudioError("is a directory, not a file")
    if size == 0:
        raise AudioError("empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise AudioError("cannot read file: permission denied")
    try:
        info = soundfile.info(str(path))
    except (RuntimeError, soundfile.LibsndfileError) as error:
        raise AudioError(f"not a readable audio file ({_first_line(error)})") from None
    except OSError as error:
        raise AudioError(f"cannot read file: {error.strerror or error}") from None
    if info.frames <= 0:
        raise AudioError("no audio frames in file")
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioError(f"invalid header: {info.samplerate} Hz, {info.channels} channels")
    if info.format == "WAV":
        _check_riff_data_size(path, size)
    return AudioInfo(
        path=str(path),
        sample_rate=int(info.samplerate),
        channels=int(info.channels),
        frames=int(info.frames),
        format=info.format,
        subtype=info.subtype,
    )


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _check_riff_data_size(path: Path, size: int) -> None:
    """Compare the 'data' chunk size a RIFF/WAVE header declares with the bytes present.

    libsndfile opens many truncated WAVs silently and reports fewer frames; the header
    is the only record of how long the file should be. Sizes of 0 and 0xFFFFFFFF mean
    "unknown" (streamed recordings) and are accepted.
    """
    with open(path, "rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        offset = 12
        while offset + 8 <= size:
            handle.seek(offset)
            chunk = handle.read(8)
            if len(chunk) < 8:
                return
            chunk_id, chunk_size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if chunk_id == b"data":
                available = size - (offset + 8)
                if chunk_size not in (0, 0xFFFFFFFF) and chunk_size > available:
                    raise AudioError(
                        f"truncated: header declares {chunk_size} bytes of audio, file holds {available}"
                    )
                return
            offset += 8 + chunk_size + (chunk_size & 1)


def read_mono(path: str | os.PathLike, sample_rate: int, *, info: AudioInfo | None = None) -> np.ndarray:
    """Read a file as float32 mono at ``sample_rate``.

    Channels are averaged; the signal is resampled with torchaudio's windowed sinc. The
    whole clip is returned: for a recording of any length, use ``stream_mono``.

    Returns:
        [S] float32 array.

    Raises:
        AudioError: unreadable, truncated (fewer frames than the header says), NaN/Inf
            samples, or all-zero audio.
    """
    info = info or probe(path)
    audio = np.empty(resampled_length(info.frames, info.sample_rate, sample_rate), dtype=np.float32)  # [S]
    filled = 0
    for block in stream_mono(path, sample_rate, info=info):
        audio[filled : filled + len(block)] = block
        filled += len(block)
    assert filled == len(audio), f"{filled} samples streamed, {len(audio)} expected"
    return audio


def stream_mono(
    path: str | os.PathLike, sample_rate: int, *, info: AudioInfo | None = None, block_frames: int = READ_BLOCK_FRAMES
) -> Iterator[np.ndarray]:
    """Read a file as float32 mono at ``sample_rate``, one block at a time.

    The blocks, joined, are ``read_mono``'s samples exactly; what is held at once is a block
    of ``block_frames`` file frames and the resampler's context, whatever the file's length.

    Yields:
        [S_block] float32 arrays (lengths vary; none is empty).

    Raises:
        AudioError: as ``read_mono``, with the same reasons. Truncation, NaN/Inf and
            silence are known only at the end of the file, so the error comes from the
            last ``next``, after blocks were yielded: do not commit anything made from
            the blocks before the iterator is exhausted (or ``check_mono`` first).
    """
    if block_frames <= 0:
        raise ValueError(f"block_frames must be positive, got {block_frames}")
    info = info or probe(path)
    resampler = StreamingResampler(info.sample_rate, sample_rate)
    for mono in _mono_blocks(path, info, block_frames):
        resampled = resampler.push(mono)
        if len(resampled):
            yield resampled
    resampled = resampler.finish()
    if len(resampled):
        yield resampled


def check_mono(path: str | os.PathLike, *, info: AudioInfo | None = None, block_frames: int = READ_BLOCK_FRAMES) -> AudioInfo:
    """Make every check of ``read_mono`` on a whole file, holding one block at a time and
    resampling nothing; returns the file's header.

    Raises:
        AudioError: as ``read_mono``.
    """
    info = info or probe(path)
    for _ in _mono_blocks(path, info, block_frames):
        pass
    return info


def _mono_blocks(path: str | os.PathLike, info: AudioInfo, block_frames: int) -> Iterator[np.ndarray]:
    """The file's channel average at its own rate, [S_block] float32 blocks; the checks
    that need every sample raise after the last block."""
    read = nonfinite = 0
    audible = False

    def failed(error: Exception) -> AudioError:
        return AudioError(f"decoding failed after {read} of {info.frames} frames ({_first_line(error)})")

    try:
        handle = soundfile.SoundFile(str(path))
    except (RuntimeError, soundfile.LibsndfileError, OSError) as error:
        raise failed(error) from None
    with handle:
        while read < info.frames:
            try:
                block = handle.read(min(block_frames, info.frames - read), dtype="float32", always_2d=True)  # [S, C]
            except (RuntimeError, soundfile.LibsndfileError, OSError) as error:
                raise failed(error) from None
            if len(block) == 0:
                break
            mono = block.mean(axis=1)  # [S]
            read += len(mono)
            nonfinite += len(mono) - int(np.count_nonzero(np.isfinite(mono)))
            audible = audible or bool(np.any(mono))
            yield mono
    if read < info.frames:
        raise AudioError(f"truncated: header says {info.frames} frames, read {read}")
    if nonfinite:
        raise AudioError(f"contains {nonfinite} NaN/Inf samples")
    if not audible:
        raise AudioError("silent: every sample is zero")


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> None:
    """Write [S] mono or [S, C] audio; the folder is created if needed."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), audio, sample_rate, subtype=subtype)


DEFAULT_PEAK_CEILING = 0.99  # just under full scale, so that a PCM conversion later cannot clip


class PeakLimit(NamedTuple):
    """What ``limit_peak`` did: the audio to write, the gain applied and the peak before it."""

    audio: np.ndarray  # [S] or [S, C]
    gain: float  # 1.0 when the audio was left alone
    peak: float  # max |sample| before the gain


def limit_peak(audio: np.ndarray, ceiling: float = DEFAULT_PEAK_CEILING) -> PeakLimit:
    """Scale ``audio`` down so that its peak is at most ``ceiling``; never scale it up.

    A model's decoded output is unbounded floats (a trained fusion model peaked at 3.8):
    written as is, a float WAV plays clipped and a PCM one clips or wraps. One gain for the
    whole signal (every channel alike) keeps its shape, so envelope correlations and the
    balance between channels do not change.

    Args:
        audio: [S] mono or [S, C] float samples.
        ceiling: the largest peak allowed, in (0, 1].
    Returns:
        ``PeakLimit(audio, gain, peak)``: when the peak is above ``ceiling``, the audio
        times ``gain = ceiling / peak`` (same dtype); otherwise ``audio`` itself (no copy)
        and gain 1.0. Silence and empty audio have peak 0 and gain 1.0.
    Raises:
        AudioError: a sample is NaN or infinite. No gain makes such a signal playable, and
            zeroing those samples would hide a diverged model behind a file that plays.
        ValueError: ``ceiling`` is not in (0, 1].
    """
    if isinstance(ceiling, bool) or not isinstance(ceiling, (int, float)) or not 0 < ceiling <= 1:
        raise ValueError(f"ceiling must be in (0, 1] (1 is full scale), got {ceiling!r}")
    finite = np.isfinite(audio)
    if not finite.all():
        bad = audio.size - int(np.count_nonzero(finite))
        raise AudioError(f"{bad} of {audio.size} samples are NaN or infinite: there is no peak to limit")
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    # The ceiling in the audio's own precision (float32 0.99 is 0.99000001), so that audio
    # limited once comes back unchanged, with gain 1.0, when it is limited again.
    ceiling = float(np.asarray(ceiling, dtype=audio.dtype)) if np.issubdtype(audio.dtype, np.floating) else ceiling
    if peak <= ceiling:
        return PeakLimit(audio, 1.0, peak)
    gain = ceiling / peak
    # the clip only takes back float rounding (a last-bit overshoot of the ceiling)
    limited = np.clip(audio * gain, -ceiling, ceiling).astype(audio.dtype, copy=False)
    return PeakLimit(limited, gain, peak)


# ------------------------------------------------------------------ segmenting

TAIL_POLICIES = ("drop", "pad")


@dataclass(frozen=True)
class Segmenting:
    """How recordings are cut into fixed windows.

    Args:
        segment_seconds: window length (16 s by default; 24 s suits adaptive windows).
        hop_seconds: distance between window starts; defaults to ``segment_seconds``
            (no overlap). Smaller values overlap windows.
        tail: what happens to audio after the last full window. ``"drop"`` discards it;
            ``"pad"`` keeps a last window zero-padded to full length when it holds at
            least ``min_tail_seconds`` of audio. A recording with no window under the
            policy is rejected.
        min_tail_seconds: shortest tail kept by ``"pad"``; defaults to half a segment.
    """

    segment_seconds: float = 16.0
    hop_seconds: float | None = None
    tail: str = "drop"
    min_tail_seconds: float | None = None

    def __post_init__(self) -> None:
        if not self.segment_seconds > 0:
            fail("segment_seconds", f"must be positive, got {self.segment_seconds}")
        if self.hop_seconds is not None and not 0 < self.hop_seconds:
            fail("hop_seconds", f"must be positive, got {self.hop_seconds}")
        if self.tail not in TAIL_POLICIES:
            fail("tail", f"must be one of {TAIL_POLICIES}, got {self.tail!r}")
        if self.min_tail_seconds is not None and not 0 < self.min_tail_seconds <= self.segment_seconds:
            fail("min_tail_seconds",
                f"must be in (0, segment_seconds={self.segment_seconds}], got {self.min_tail_seconds}"
            )

    @property
    def hop(self) -> float:
        return self.hop_seconds if self.hop_seconds is not None else self.segment_seconds

    @property
    def min_tail(self) -> float:
        return self.min_tail_seconds if self.min_tail_seconds is not None else self.segment_seconds / 2

    def to_dict(self) -> dict:
        return {
            "segment_seconds": self.segment_seconds,
            "hop_seconds": self.hop,
            "tail": self.tail,
            "min_tail_seconds": self.min_tail if self.tail == "pad" else None,
        }

    def min_seconds(self) -> float:
        """Shortest recording that yields one window."""
        return self.min_tail if self.tail == "pad" else self.segment_seconds

    def bounds(self, num_samples: int, sample_rate: int) -> list[tuple[int, int]]:
        """Sample ranges [start, end) of every window; ``end`` may pass ``num_samples``
        for a padded tail (the caller pads with zeros)."""
        length = round(self.segment_seconds * sample_rate)
        hop = round(self.hop * sample_rate)
        windows = []
        start = 0
        while start + length <= num_samples:
            windows.append((start, start + length))
            start += hop
        if self.tail == "pad" and start < num_samples:
            if num_samples - start >= round(self.min_tail * sample_rate):
                windows.append((start, start + length))
        return windows

    def count(self, seconds: float, sample_rate: int) -> int:
        return len(self.bounds(math.floor(seconds * sample_rate), sample_rate))


def cut(audio: np.ndarray, bounds: list[tuple[int, int]]) -> np.ndarray:
    """[S] audio and window bounds -> [N, window] windows, zero-padded past the end."""
    if not bounds:
        return np.zeros((0, 0), dtype=np.float32)
    length = bounds[0][1] - bounds[0][0]
    out = np.zeros((len(bounds), length), dtype=np.float32)
    for row, (start, end) in enumerate(bounds):
        piece = audio[start:min(end, len(audio))]
        out[row, : len(piece)] = piece
    return out


def cut_stream(blocks: Iterable[np.ndarray], bounds: list[tuple[int, int]]) -> Iterator[np.ndarray]:
    """``cut`` for audio that arrives in blocks (``stream_mono``): the same windows, one at a
    time, holding at most one window and one block of audio.

    Args:
        blocks: [S_block] float32 pieces of the audio, in order.
        bounds: window ranges as ``Segmenting.bounds`` gives them, starts in order.
    Yields:
        [window] float32 per bound, zero-padded past the end of the audio. Reading stops
        after the last window: the rest of ``blocks`` is left unread.
    """
    if any(later[0] < earlier[0] for earlier, later in zip(bounds, bounds[1:])):
        raise ValueError("cut_stream needs windows in order of their starts")
    blocks = iter(blocks)
    held = np.zeros(0, dtype=np.float32)  # the audio's samples [held_start, held_start + len(held))
    arrived = []  # blocks after ``held``, joined to it once a window is complete
    held_start = received = 0
    for start, end in bounds:
        while received < end and (block := next(blocks, None)) is not None:
            if received + len(block) <= start:  # wholly before this window: never needed
                held, arrived, held_start = held[:0], [], received + len(block)
            else:
                arrived.append(block)
            received += len(block)
        if arrived:
            held, arrived = np.concatenate([held, *arrived]), []
        # forget what comes before this window: later windows start no earlier
        forget = min(start, received) - held_start
        held, held_start = held[forget:], held_start + forget
        window = np.zeros(bounds[0][1] - bounds[0][0], dtype=np.float32)  # [window]
        piece = held[start - held_start : end - held_start]
        window[: len(piece)] = piece
        yield window


def splice(audio: np.ndarray, spans: list[tuple[int, int]], *, crossfade: int) -> np.ndarray:
    """Play sample ranges of ``audio`` in order, with an equal-power crossfade at every jump.

    At a join where the next span does not continue the previous one, the incoming span's
    first ``crossfade`` samples fade in over the outgoing span's continuation, so every
    span starts exactly where its samples sit in the output (frame-exact for pointers).

    Args:
        audio: [S] or [S, C] samples.
        spans: (start, end) sample ranges, end exclusive, in play order.
        crossfade: samples of each crossfade (0: hard cuts).
    Returns:
        [sum(end - start)] or [sum(end - start), C] samples.
    """
    pad = [(0, crossfade)] + [(0, 0)] * (audio.ndim - 1)
    padded = np.pad(audio, pad)  # room for the continuation after the last sample
    pieces, previous_end = [], None
    for start, end in spans:
        if not 0 <= start < end <= len(audio):
            raise ValueError(f"span ({start}, {end}) is not inside the audio's {len(audio)} samples")
        piece = padded[start:end].copy()
        if previous_end is not None and previous_end != start and crossfade:
            length = min(crossfade, len(piece))
            ramp = (np.arange(length) + 0.5) / length * (np.pi / 2)
            ramp = ramp.reshape((-1,) + (1,) * (audio.ndim - 1))
            piece[:length] = np.sin(ramp) * piece[:length] + np.cos(ramp) * padded[previous_end : previous_end + length]
        pieces.append(piece)
        previous_end = end
    if not pieces:
        return np.zeros((0,) + audio.shape[1:], dtype=audio.dtype)
    return np.concatenate(pieces).astype(audio.dtype, copy=False)
