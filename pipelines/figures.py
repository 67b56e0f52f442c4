"""Figures of audio for people to look at: one PNG, one row per clip.

Plain numpy and matplotlib (an explicit Agg canvas, never pyplot: no global backend to
switch and no figure left open in a long-running worker), so that ``jingle fuse`` and the
training loop's MLflow artifacts draw the same picture.

Shape letters: S samples, F spectrogram frames, K frequency bins.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Points of the drawn envelope per row: finer than the 250-part envelope of the
# correlation loss (note 003), so that single drum hits stay visible.
ENVELOPE_POINTS = 1500
# Spectrogram frames per row at most: longer clips get a longer hop, not a wider image.
MAX_SPECTROGRAM_FRAMES = 4000
MIN_FFT = 1024
# Colour range of the spectrograms, below the loudest bin of all rows.
DYNAMIC_RANGE_DB = 80.0


def fusion_figure(
    path: str | os.PathLike,
    *,
    input_audio: np.ndarray,
    target_audio: np.ndarray,
    output_audio: np.ndarray,
    sample_rate: int,
    title: str = "",
) -> Path:
    """Write a PNG of a fusion: input, target and output, each as envelope and spectrogram,
    and below them the notes: the output's transcribed notes over the target's, with the
    input's onsets (``notes_axis``), what the arrangement score hears.

    Args:
        path: the PNG to write (its folder is created).
        input_audio, target_audio, output_audio: [S] float waveforms; lengths may differ,
            each row is drawn over its own length on a shared time axis.
        sample_rate: of all three, in Hz.
        title: shown above the rows.
    Returns:
        ``path`` as a ``Path``.
    """
    rows = {"input": input_audio, "target": target_audio, "output": output_audio}
    clips = {label: np.nan_to_num(np.asarray(audio, dtype=np.float32)) for label, audio in rows.items()}
    return audio_figure(path, rows, sample_rate=sample_rate, title=title,
                        extra=lambda axis: notes_axis(axis, clips["input"], clips["target"], clips["output"], sample_rate))


def notes_axis(axis, input_audio: np.ndarray, target_audio: np.ndarray, output_audio: np.ndarray, sample_rate: int) -> None:
    """A piano roll on ``axis``: the target's transcribed notes (grey), the output's (a
    bar per note, green where the target sounds its pitch class then, red where not) and
    the input's onsets (dotted lines): notes starting on the lines, in green, are an
    arrangement; bars spanning several lines, or red, are not."""
    from jingle.evaluation.notes import detect_onsets, pitch_class_roll
    from jingle.evaluation.transcription import FRAME_RATE, transcribe

    target, output = transcribe(target_audio, sample_rate), transcribe(output_audio, sample_rate)
    frames = int(np.ceil(max(len(target_audio), len(output_audio)) / sample_rate * FRAME_RATE)) + 1
    sounding = pitch_class_roll(target.notes, frames)  # [T, 12]
    for onset in detect_onsets(input_audio, sample_rate):
        axis.axvline(onset, color="tab:blue", linewidth=0.5, linestyle=":", alpha=0.6)
    for note in target.notes:
        axis.broken_barh([(note.onset_seconds, note.offset_seconds - note.onset_seconds)], (note.midi - 0.45, 0.9),
                         facecolors="0.8", edgecolors="none")
    for note in output.notes:
        frame = min(frames - 1, int(round(note.onset_seconds * FRAME_RATE)))
        colour = "tab:green" if sounding[frame, note.pitch_class] else "tab:red"
        axis.broken_barh([(note.onset_seconds, note.offset_seconds - note.onset_seconds)], (note.midi - 0.35, 0.7),
                         facecolors=colour, edgecolors="black", linewidth=0.3)
    pitches = [note.midi for note in (*target.notes, *output.notes)] or [60]
    axis.set_ylim(min(pitches) - 2, max(pitches) + 2)
    axis.set_ylabel("MIDI pitch")
    axis.set_title(f"notes (Basic Pitch): output {len(output.notes)} (green: in the target's harmony, red: not) over the "
                   f"target's {len(target.notes)} (grey); dotted: the input's onsets", fontsize=10)


def audio_figure(path: str | os.PathLike, rows: Mapping[str, np.ndarray], *, sample_rate: int, title: str = "",
                 extra=None) -> Path:
    """Write a PNG with one row per named clip: envelope (left), log spectrogram (right).

    All panels share the time axis (seconds); the spectrograms share one colour scale
    (dB below the loudest bin of all rows), so that loudness compares across rows.

    Args:
        path: the PNG to write (its folder is created).
        rows: row label -> [S] float waveform at ``sample_rate``.
        sample_rate: in Hz.
        title: shown above the rows.
        extra: ``draw(axis)`` for one more row across both columns, below the clips.
    """
    if not rows:
        raise ValueError("audio_figure needs at least one row")
    if not sample_rate > 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    clips = {}
    for label, audio in rows.items():
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise ValueError(f"{label} audio must be [S] (mono), got shape {audio.shape}")
        clips[label] = np.nan_to_num(audio)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    longest = max(len(audio) for audio in clips.values()) / sample_rate
    spectrograms = {label: log_spectrogram(audio, sample_rate) for label, audio in clips.items()}
    loudest = max((float(s.db.max()) for s in spectrograms.values() if s.db.size), default=0.0)

    figure = Figure(figsize=(14, 2.4 * len(clips) + (3.2 if extra else 0.0) + 0.6), layout="constrained")
    FigureCanvasAgg(figure)
    if extra is None:
        axes = figure.subplots(len(clips), 2, sharex=True, squeeze=False, width_ratios=(1, 2))
    else:
        grid = figure.add_gridspec(len(clips) + 1, 2, width_ratios=(1, 2), height_ratios=[1] * len(clips) + [1.4])
        axes = np.array([[figure.add_subplot(grid[row, column]) for column in range(2)] for row in range(len(clips))])
        for axis in axes.flat[1:]:
            axis.sharex(axes.flat[0])
        extra_axis = figure.add_subplot(grid[len(clips), :], sharex=axes.flat[0])
    for (label, audio), (envelope_axis, spectrogram_axis) in zip(clips.items(), axes):
        seconds = len(audio) / sample_rate
        times, peaks = max_envelope(audio, sample_rate)
        envelope_axis.fill_between(times, -peaks, peaks, color="tab:blue", linewidth=0.0, step="post")
        peak = float(peaks.max()) if peaks.size else 0.0
        envelope_axis.set_ylim(-1.05 * max(peak, 1e-3), 1.05 * max(peak, 1e-3))
        envelope_axis.set_ylabel("amplitude")
        envelope_axis.set_title(f"{label}: envelope ({seconds:.2f} s, peak {peak:.2f})", fontsize=10)
        spectrogram = spectrograms[label]
        image = spectrogram_axis.imshow(
            spectrogram.db,  # [K, F]
            origin="lower",
            aspect="auto",
            interpolation="nearest",
            extent=(0.0, spectrogram.seconds, 0.0, sample_rate / 2000.0),
            cmap="magma",
            vmin=loudest - DYNAMIC_RANGE_DB,
            vmax=loudest,
        )
        spectrogram_axis.set_ylabel("kHz")
        spectrogram_axis.set_title(f"{label}: log-magnitude spectrogram", fontsize=10)
        figure.colorbar(image, ax=spectrogram_axis, label="dB", pad=0.01)
    for axis in axes[-1]:
        axis.set_xlabel("time (s)")
        axis.set_xlim(0.0, max(longest, 1.0 / sample_rate))
    if extra is not None:
        extra(extra_axis)
        extra_axis.set_xlabel("time (s)")
        extra_axis.set_xlim(0.0, max(longest, 1.0 / sample_rate))
    return save_figure(figure, path, title)


def max_envelope(audio: np.ndarray, sample_rate: int, points: int = ENVELOPE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Max of |x| over consecutive blocks (the note 003 envelope, at a finer grain).

    Unlike the loss's envelope, the last partial block is kept, so the row ends where the
    clip does.

    Returns:
        (block start times in seconds, peaks), each [N] with N <= ``points`` (plus one
        closing point so that a step plot reaches the clip's end).
    """
    if len(audio) == 0:
        return np.zeros(0), np.zeros(0)
    block = max(1, math.ceil(len(audio) / points))
    padded = np.zeros(math.ceil(len(audio) / block) * block, dtype=np.float32)
    padded[: len(audio)] = np.abs(audio)
    peaks = padded.reshape(-1, block).max(axis=1)  # [N]
    times = np.arange(len(peaks) + 1) * block / sample_rate
    times[-1] = len(audio) / sample_rate
    return times, np.append(peaks, peaks[-1])


@dataclass(frozen=True)
class Spectrogram:
    """``db``: [K, F] magnitudes in dB; ``seconds``: the time the F frames span."""

    db: np.ndarray
    seconds: float


def log_spectrogram(audio: np.ndarray, sample_rate: int, max_frames: int = MAX_SPECTROGRAM_FRAMES) -> Spectrogram:
    """Hann-windowed STFT magnitude in dB, with a hop long enough for ``max_frames``.

    The FFT grows with the hop (a power of two at least as long), so that a long clip's
    frames still cover every sample.
    """
    hop = max(MIN_FFT // 4, math.ceil(len(audio) / max_frames))
    n_fft = max(MIN_FFT, 2 ** math.ceil(math.log2(hop)))
    frames = max(1, math.ceil(len(audio) / hop))
    padded = np.zeros((frames - 1) * hop + n_fft, dtype=np.float32)
    padded[: len(audio)] = audio
    windows = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:frames]  # [F, n_fft]
    magnitude = np.abs(np.fft.rfft(windows * np.hanning(n_fft).astype(np.float32), axis=1))  # [F, K]
    db = 20.0 * np.log10(np.maximum(magnitude, 1e-7)).T  # [K, F]
    return Spectrogram(db.astype(np.float32), frames * hop / sample_rate)


def pointer_figure(
    path: str | os.PathLike,
    *,
    raw_mel: np.ndarray,
    edit_mel: np.ndarray,
    pointers: np.ndarray,
    frame_rate: float,
    reference: np.ndarray | None = None,
    confidence: np.ndarray | None = None,
    title: str = "",
) -> Path:
    """Write a PNG of an edit: both log-mels and the pointer path (edit time -> raw time).

    Args:
        raw_mel: [M, Tr] and ``edit_mel`` [M, Te] log-mel frames.
        pointers: [Te] raw frame of every edit frame (the path drawn).
        frame_rate: frames per second of both.
        reference: [Te] known pointers, drawn under the path when given.
        confidence: [Te] per-frame confidence, drawn under the path when given.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(14, 9), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(3, 1, height_ratios=[1, 1, 2.2])
    low = float(min(raw_mel.max(initial=0.0), edit_mel.max(initial=0.0))) - 12.0  # ~100 dB below the top, natural log
    for row, (name, mel) in enumerate((("raw", raw_mel), ("edit", edit_mel))):
        axes = figure.add_subplot(grid[row])
        axes.imshow(mel, origin="lower", aspect="auto", cmap="magma", vmin=low,
                    extent=(0, mel.shape[1] / frame_rate, 0, mel.shape[0]))
        axes.set_ylabel(f"{name}\nmel bin")
        axes.set_xlabel("seconds")
    axes = figure.add_subplot(grid[2])
    edit_seconds = np.arange(len(pointers)) / frame_rate
    if reference is not None:
        axes.plot(edit_seconds, np.asarray(reference) / frame_rate, color="0.7", linewidth=4, label="known")
    if confidence is not None:
        points = axes.scatter(edit_seconds, np.asarray(pointers) / frame_rate, s=2, c=confidence, cmap="viridis", vmin=0, vmax=1, label="pointers")
        figure.colorbar(points, ax=axes, label="confidence")
    else:
        axes.scatter(edit_seconds, np.asarray(pointers) / frame_rate, s=2, color="tab:blue", label="pointers")
    axes.set_xlabel("edit time (s)")
    axes.set_ylabel("raw time (s)")
    axes.set_xlim(0, max(len(pointers), 1) / frame_rate)
    axes.set_ylim(0, raw_mel.shape[1] / frame_rate)
    axes.legend(loc="upper left")
    axes.grid(alpha=0.3)
    return save_figure(figure, path, title)


def save_figure(figure, path: str | os.PathLike, title: str) -> Path:
    """Title the figure, write it as a PNG (its folder created) and return the path."""
    if title:
        figure.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    return path
