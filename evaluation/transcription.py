"""Automatic music transcription, offline: audio to notes with Spotify's Basic Pitch.

The note-level figures of the arrangement score (``evaluation/notes.py``) need an independent
listener that turns any clip into notes (onset, offset, pitch). Basic Pitch (Bittner et
al., "A Lightweight Instrument-Agnostic Model for Polyphonic Note Transcription and
Multipitch Estimation", ICASSP 2022) is such a transcriber: instrument-agnostic,
polyphonic, about 17k parameters, trained on real recordings, and independent of
anything this project trains.

Its ICASSP 2022 model ships in basic-pitch 0.4.0's wheel as ONNX; this project ships the
same file (``evaluation/assets/basic_pitch/nmp.onnx``, Apache-2.0, Copyright 2022 Spotify AB,
the licence beside it) and runs it with onnxruntime. Why not depend on ``basic-pitch``
itself: on Linux with Python 3.11 its metadata requires ``tensorflow<2.15.1`` (~2 GB
installed, and a minute or more of a fresh install), which the ONNX inference does not
use, and pip cannot install a package without its requirements from a project's own
dependency list. What this module takes from basic-pitch 0.4.0 (``inference.py``,
``note_creation.py``, ``constants.py``; Apache-2.0), with the same defaults as its
``predict``:

- the windowing (2 s windows overlapping by 30 frames at 22.05 kHz, half the overlap
  dropped on each side) and the frame times (its ``model_frames_to_time``);
- ``output_to_notes_polyphonic``: notes start at peaks of the onset posterior above
  ``ONSET_THRESHOLD`` (onsets inferred from jumps of the note posterior added), last
  while the note posterior stays above ``FRAME_THRESHOLD`` (``ENERGY_TOLERANCE_FRAMES``
  of grace), are dropped below ``MIN_NOTE_FRAMES`` (127.7 ms), and the "melodia trick"
  then turns the remaining strong activations into notes too.

Pitch bends and MIDI writing are left out (nothing here reads them). The output matches
``basic_pitch.inference.predict``'s note events (start, end, pitch, amplitude) on the
same audio; ``tests/test_notes.py`` checks the notes of rendered chords.

Shape letters: S samples, W windows, T frames, P pitches (88 piano keys from A0).
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.signal

MODEL_PATH = Path(__file__).resolve().parent / "assets" / "basic_pitch" / "nmp.onnx"

SAMPLE_RATE = 22_050  # the model's input rate
FFT_HOP = 256
FRAME_RATE = SAMPLE_RATE // FFT_HOP  # 86: basic-pitch's ANNOTATIONS_FPS (an integer there too)
WINDOW_SECONDS = 2
WINDOW_FRAMES = FRAME_RATE * WINDOW_SECONDS  # 172
WINDOW_SAMPLES = SAMPLE_RATE * WINDOW_SECONDS - FFT_HOP  # 43,844
OVERLAP_FRAMES = 30
OVERLAP_SAMPLES = OVERLAP_FRAMES * FFT_HOP
WINDOW_HOP_SAMPLES = WINDOW_SAMPLES - OVERLAP_SAMPLES
LOWEST_MIDI = 21  # A0, pitch index 0
PITCHES = 88

ONSET_THRESHOLD = 0.5
FRAME_THRESHOLD = 0.3
MIN_NOTE_FRAMES = int(np.round(127.70 / 1000 * (SAMPLE_RATE / FFT_HOP)))  # 11
ENERGY_TOLERANCE_FRAMES = 11
WINDOWS_PER_RUN = 32  # bounds the model's memory on long clips (~100 MB per run)

_INPUT = "serving_default_input_2:0"
_OUTPUTS = ("StatefulPartitionedCall:1", "StatefulPartitionedCall:2")  # note, onset posteriors


@dataclass(frozen=True)
class Note:
    """One transcribed note."""

    onset_seconds: float
    offset_seconds: float
    midi: int
    amplitude: float  # mean note posterior over the note, in [0, 1]

    @property
    def pitch_class(self) -> int:
        return self.midi % 12


@dataclass(frozen=True, eq=False)
class Transcription:
    """A clip's notes and the posteriors they were decoded from."""

    notes: tuple[Note, ...]  # in onset order
    note_posterior: np.ndarray  # [T, P] at FRAME_RATE
    onset_posterior: np.ndarray  # [T, P]
    seconds: float

    @property
    def notes_per_second(self) -> float:
        return len(self.notes) / self.seconds if self.seconds > 0 else 0.0


class TranscriberUnavailable(RuntimeError):
    """The transcriber cannot run (onnxruntime missing, model file missing or damaged)."""


_SESSION_LOCK = threading.Lock()


@functools.cache
def _session(threads: int):
    try:
        import onnxruntime
    except ImportError as error:  # pragma: no cover - a dependency of the project
        raise TranscriberUnavailable(f"onnxruntime is not installed ({error}); reinstall jingle") from None
    if not MODEL_PATH.is_file():
        raise TranscriberUnavailable(f"the transcription model {MODEL_PATH} is missing; reinstall jingle")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # its warnings about unused initialisers are not the user's business
    try:
        return onnxruntime.InferenceSession(str(MODEL_PATH), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types
        raise TranscriberUnavailable(f"cannot load the transcription model {MODEL_PATH}: {error}") from None


def default_threads() -> int:
    """The process's compute budget as torch was given it: a Ray worker has set it to its
    share of the node's cores, a command run alone on a machine has them all."""
    import torch

    return max(1, torch.get_num_threads())


def posteriors(audio: np.ndarray, *, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The model's note and onset posteriors of ``audio`` ([S] mono at ``SAMPLE_RATE``), on
    ``threads`` intra-op threads (default: ``default_threads()``).

    Returns:
        (note, onset), each [T, P] with T = floor(S * FRAME_RATE / SAMPLE_RATE).
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"expected mono [S] audio, got shape {audio.shape}")
    padded = np.concatenate([np.zeros(OVERLAP_SAMPLES // 2, np.float32), audio])
    starts = range(0, len(padded), WINDOW_HOP_SAMPLES)
    windows = np.zeros((len(starts), WINDOW_SAMPLES, 1), np.float32)  # [W, WINDOW_SAMPLES, 1]
    for row, start in enumerate(starts):
        piece = padded[start : start + WINDOW_SAMPLES]
        windows[row, : len(piece), 0] = piece
    session = _session(threads or default_threads())
    notes, onsets = [], []
    for first in range(0, len(windows), WINDOWS_PER_RUN):
        with _SESSION_LOCK:  # one run at a time per process: the session's threads are the budget
            note, onset = session.run(list(_OUTPUTS), {_INPUT: windows[first : first + WINDOWS_PER_RUN]})
        notes.append(note)
        onsets.append(onset)
    frames = int(np.floor(len(audio) * (FRAME_RATE / SAMPLE_RATE)))
    return _unwrap(np.concatenate(notes), frames), _unwrap(np.concatenate(onsets), frames)


def _unwrap(output: np.ndarray, frames: int) -> np.ndarray:
    """[W, WINDOW_FRAMES, P] window outputs to [T, P]: half the overlap dropped on each side."""
    half = OVERLAP_FRAMES // 2
    output = output[:, half:-half, :]
    return output.reshape(-1, output.shape[-1])[:frames]


def frame_times(frames: int) -> np.ndarray:
    """Seconds of each unwrapped frame [T] (basic-pitch's ``model_frames_to_time``: each
    window's frames drift a little from the plain hop, corrected per window)."""
    index = np.arange(frames)
    window_offset = (FFT_HOP / SAMPLE_RATE) * (WINDOW_FRAMES - WINDOW_SAMPLES / FFT_HOP) + 0.0018
    return index * FFT_HOP / SAMPLE_RATE - window_offset * np.floor(index / WINDOW_FRAMES)


def transcribe(audio: np.ndarray, sample_rate: int, *, threads: int | None = None) -> Transcription:
    """The notes of ``audio`` ([S] mono float at ``sample_rate``; resampled to 22.05 kHz).

    Raises:
        TranscriberUnavailable: onnxruntime or the model file is missing.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if sample_rate != SAMPLE_RATE:
        import librosa

        audio = librosa.resample(audio, orig_sr=sample_rate, target_sr=SAMPLE_RATE).astype(np.float32)
    note, onset = posteriors(audio, threads=threads)
    events = note_events(note, onset)
    times = frame_times(len(note) + 1)
    notes = tuple(
        Note(float(times[start]), float(times[min(end, len(times) - 1)]), midi, amplitude)
        for start, end, midi, amplitude in sorted(events)
    )
    return Transcription(notes, note, onset, len(audio) / SAMPLE_RATE)


def note_events(note: np.ndarray, onset: np.ndarray) -> list[tuple[int, int, int, float]]:
    """basic-pitch's ``output_to_notes_polyphonic`` with its ``predict`` defaults.

    Args:
        note, onset: [T, P] posteriors.
    Returns:
        (start frame, end frame, MIDI pitch, amplitude) per note, unsorted.
    """
    frames = len(note)
    if frames == 0:
        return []
    onset = _inferred_onsets(onset, note)
    peaks = np.zeros_like(onset)
    peak_index = scipy.signal.argrelmax(onset, axis=0)
    peaks[peak_index] = onset[peak_index]
    onset_time, onset_pitch = np.where(peaks >= ONSET_THRESHOLD)
    remaining = note.astype(np.float64).copy()  # [T, P]
    events = []
    for start, pitch in zip(onset_time[::-1], onset_pitch[::-1]):  # backwards in time
        if start >= frames - 1:
            continue
        end, below = start + 1, 0
        while end < frames - 1 and below < ENERGY_TOLERANCE_FRAMES:
            below = below + 1 if remaining[end, pitch] < FRAME_THRESHOLD else 0
            end += 1
        end -= below
        if end - start <= MIN_NOTE_FRAMES:
            continue
        remaining[start:end, max(0, pitch - 1) : pitch + 2] = 0
        events.append((int(start), int(end), int(pitch) + LOWEST_MIDI, float(note[start:end, pitch].mean())))

    # the melodia trick: strong activations no onset claimed become notes as well
    while remaining.max() > FRAME_THRESHOLD:
        middle, pitch = np.unravel_index(int(np.argmax(remaining)), remaining.shape)
        remaining[middle, pitch] = 0
        end = _clear_run(remaining, middle, pitch, step=1)
        start = _clear_run(remaining, middle, pitch, step=-1)
        if end - start <= MIN_NOTE_FRAMES:
            continue
        events.append((int(start), int(end), int(pitch) + LOWEST_MIDI, float(note[start:end, pitch].mean())))
    return events


def _clear_run(remaining: np.ndarray, middle: int, pitch: int, *, step: int) -> int:
    """Walk from ``middle`` in direction ``step`` while the activation lasts (with
    ``ENERGY_TOLERANCE_FRAMES`` of grace), zeroing the pitch and its neighbours; return
    the run's last frame above the threshold (as basic-pitch's forward/backward passes)."""
    frames = len(remaining)
    index, below = middle + step, 0
    while (index < frames - 1 if step > 0 else index > 0) and below < ENERGY_TOLERANCE_FRAMES:
        below = below + 1 if remaining[index, pitch] < FRAME_THRESHOLD else 0
        remaining[index, max(0, pitch - 1) : pitch + 2] = 0
        index += step
    return index - step - step * below if step > 0 else index + 1 + below


def _inferred_onsets(onset: np.ndarray, note: np.ndarray, differences: int = 2) -> np.ndarray:
    """basic-pitch's ``get_infered_onsets``: the onset posterior, or where larger the
    smallest rise of the note posterior over 1..``differences`` frames (rescaled to the
    onset posterior's maximum). [T, P]"""
    rises = []
    for n in range(1, differences + 1):
        shifted = np.concatenate([np.zeros((n, note.shape[1])), note])
        rises.append(shifted[n:, :] - shifted[:-n, :])
    rise = np.min(rises, axis=0)
    rise[rise < 0] = 0
    rise[:differences, :] = 0
    peak = float(rise.max())
    if peak > 0:
        rise = float(onset.max()) * rise / peak
    return np.maximum(onset, rise)
