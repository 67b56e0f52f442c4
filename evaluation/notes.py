"""Note-level figures of a fusion output: the notes a listener hears, against the sources.

An arrangement (design note 004) plays the input's rhythm as notes in the target's
harmony. Spectral figures (onset-strength and chroma correlations) cannot tell clear notes
on the input's hits from the target's harmony smeared in time with broadband bursts on the
hits: the bursts correlate with the input's onsets as well as notes do. These figures
listen at the level of notes instead. Every clip goes through one independent
transcriber (``evaluation/transcription.py``, Spotify's Basic Pitch), and the figures compare
notes, with fixed definitions (``NOTE_FIGURE_NAMES``; None where undefined, never NaN):

- ``note_onset_f1`` / ``_precision`` / ``_recall``: the output's note onsets against the
  input's onsets (mir_eval's onset F-measure, ``ONSET_WINDOW_SECONDS`` = ±50 ms). The
  input's onsets come from an onset detector (librosa's spectral flux peaks), not the
  transcriber: an input such as drums holds onsets but few pitched notes. The output's
  onsets are its notes' onsets with the notes of one chord merged (onsets less than
  ``CHORD_SPREAD_SECONDS`` apart are one event): a chord on a hit is one onset, not three
  of which two would count as false.
- ``note_onset_f1_chance``: the F1 the same onsets reach by chance: the mean over
  ``CHANCE_SHIFTS`` circular shifts of the output's onsets (uniform between half a second
  and the clip's length less half a second, seeded). A dense input leaves little time
  more than 50 ms from an onset, so onsets at random times match often: noise under the
  input's loudness reached an F1 of 0.57, a stationary noise 0.40, at a chance level of
  0.26 and 0.43. A shift keeps the onsets' density and their own regularity, so an
  output on the input's grid but not its hits keeps a high chance level too.
- ``note_onset_f1_above_chance`` = max(0, (F1 - chance) / (1 - chance)): 1 for onsets on
  every hit and nowhere else, 0 for onsets no better placed than at random (Cohen's
  kappa's correction). The score's ``rhythm``.
- ``note_onset_f1_target``: the output's onsets against the target's note onsets
  (reported: where the sources share a beat, an arrangement scores here too).
- ``pitch_class_precision``: the share of the output's note-time (each note's duration,
  summed over notes) spent in a pitch class that one of the target's notes sounds at that
  moment. ``pitch_class_recall``: the share of the target's sounding pitch classes over
  time (frames x pitch classes) that the output also sounds. Both on the transcriber's
  frames (86 per second). ``pitch_class_f1``: their harmonic mean.
- ``note_clarity``: the share of the output's energy (STFT power, all frequencies) that
  lies on the partials of its transcribed notes while they sound: per note, the first
  ``CLARITY_PARTIALS`` harmonics of its pitch, each ± a quarter tone (at least
  ``CLARITY_MIN_BINS`` bins: a Hann window's main lobe). Clear notes score high; broadband
  bursts, noise and sound the transcriber hears no note in do not count.
- ``notes_per_second`` (output), ``input_onsets_per_second``, ``target_notes_per_second``.

Shape letters: T frames, P pitch classes (12), F STFT bins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jingle.evaluation.transcription import FRAME_RATE as NOTE_FRAME_RATE
from jingle.evaluation.transcription import Note, Transcription

ONSET_WINDOW_SECONDS = 0.05  # mir_eval's default, and the tolerance the figures use
CHANCE_SHIFTS = 64
CHORD_SPREAD_SECONDS = 0.035  # three transcriber frames: the notes of one struck chord
ONSET_HOP_LENGTH = 256  # at 22.05 kHz: 11.6 ms, twice the score's STFT rate, for onset timing
CLARITY_PARTIALS = 16
CLARITY_MIN_BINS = 2  # a Hann window's main lobe is 4 bins wide
QUARTER_TONE = 2 ** (1 / 24) - 1  # relative frequency tolerance of a partial

NOTE_FIGURE_NAMES = (
    "note_onset_f1", "note_onset_precision", "note_onset_recall", "note_onset_f1_chance",
    "note_onset_f1_above_chance", "note_onset_f1_target",
    "pitch_class_precision", "pitch_class_recall", "pitch_class_f1",
    "note_clarity", "notes_per_second", "input_onsets_per_second", "target_notes_per_second",
)  # fmt: skip


@dataclass(frozen=True, eq=False)
class NoteSources:
    """What the note figures need of a pair's sources, computed once per pair."""

    input_onsets: np.ndarray  # [N] seconds, from the onset detector
    target: Transcription
    target_pitch_classes: np.ndarray  # [T, P] bool: pitch classes the target sounds per frame
    target_onsets: np.ndarray  # [N] seconds, chords merged
    seconds: float


def detect_onsets(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Onset times in seconds of ``audio`` ([S] mono): librosa's spectral-flux peak picking
    at a 256-sample hop (on the generated drums: F = 0.99 against the true hits, median
    error 12 ms)."""
    import librosa

    envelope = librosa.onset.onset_strength(y=audio, sr=sample_rate, hop_length=ONSET_HOP_LENGTH)
    return librosa.onset.onset_detect(
        onset_envelope=envelope, sr=sample_rate, hop_length=ONSET_HOP_LENGTH, units="time"
    ).astype(np.float64)


def note_onsets(notes: tuple[Note, ...] | list[Note]) -> np.ndarray:
    """The distinct onset events of ``notes`` in seconds: onsets less than
    ``CHORD_SPREAD_SECONDS`` after the previous one belong to its event, which keeps its
    first onset. [N]"""
    times = np.sort(np.array([note.onset_seconds for note in notes], dtype=np.float64))
    if times.size == 0:
        return times
    starts = np.concatenate([[True], np.diff(times) >= CHORD_SPREAD_SECONDS])
    return times[starts]


def pitch_class_roll(notes: tuple[Note, ...] | list[Note], frames: int) -> np.ndarray:
    """[T, P] bool: the pitch classes ``notes`` sound on the transcriber's frame grid."""
    roll = np.zeros((frames, 12), dtype=bool)
    for note in notes:
        first, last = _frame_span(note, frames)
        roll[first:last, note.pitch_class] = True
    return roll


def _frame_span(note: Note, frames: int) -> tuple[int, int]:
    first = min(frames, max(0, int(round(note.onset_seconds * NOTE_FRAME_RATE))))
    last = min(frames, max(first, int(round(note.offset_seconds * NOTE_FRAME_RATE))))
    return first, last


def analyse_note_sources(input_onsets: np.ndarray, target: Transcription, seconds: float) -> NoteSources:
    frames = int(np.ceil(seconds * NOTE_FRAME_RATE))
    return NoteSources(input_onsets, target, pitch_class_roll(target.notes, frames), note_onsets(target.notes), seconds)


def _onset_f_measure(reference: np.ndarray, estimated: np.ndarray) -> tuple[float, float, float] | None:
    """(F, precision, recall) of ``estimated`` onsets against ``reference``; None without
    reference onsets (nothing to follow). An output without notes scores 0."""
    import mir_eval

    if reference.size == 0:
        return None
    if estimated.size == 0:
        return 0.0, 0.0, 0.0
    f_measure, precision, recall = mir_eval.onset.f_measure(reference, estimated, window=ONSET_WINDOW_SECONDS)
    return float(f_measure), float(precision), float(recall)


def chance_f1(reference: np.ndarray, estimated: np.ndarray, seconds: float, *, seed: int = 0) -> float | None:
    """The mean onset F1 of ``estimated`` circularly shifted by ``CHANCE_SHIFTS`` seeded
    random offsets in [0.5 s, ``seconds`` - 0.5 s] (all offsets when the clip is shorter
    than a second); None without reference onsets, 0 without estimated ones."""
    import mir_eval

    if reference.size == 0:
        return None
    if estimated.size == 0 or seconds <= 0:
        return 0.0
    margin = min(0.5, seconds / 2)
    offsets = np.random.default_rng(seed).uniform(margin, seconds - margin, CHANCE_SHIFTS)
    values = [
        mir_eval.onset.f_measure(reference, np.sort((estimated + offset) % seconds), window=ONSET_WINDOW_SECONDS)[0]
        for offset in offsets
    ]
    return float(np.mean(values))


def note_figures(
    sources: NoteSources,
    output: Transcription,
    *,
    power: np.ndarray | None = None,
    sample_rate: int | None = None,
    n_fft: int | None = None,
    hop_length: int | None = None,
) -> dict[str, float | None]:
    """Every figure of ``NOTE_FIGURE_NAMES`` for one output.

    Args:
        sources: from ``analyse_note_sources``.
        output: the output's transcription, over the same time span as the sources.
        power: the output's STFT power [F, T] (centred frames) for ``note_clarity``, with
            the ``sample_rate``, ``n_fft`` and ``hop_length`` it was computed at; without
            it, clarity is None.
    """
    seconds = sources.seconds
    notes = [note for note in output.notes if note.onset_seconds < seconds]
    figures: dict[str, float | None] = dict.fromkeys(NOTE_FIGURE_NAMES)
    figures["notes_per_second"] = len(notes) / seconds if seconds > 0 else None
    figures["input_onsets_per_second"] = sources.input_onsets.size / seconds if seconds > 0 else None
    figures["target_notes_per_second"] = len(sources.target.notes) / seconds if seconds > 0 else None

    onsets = note_onsets(notes)
    to_input = _onset_f_measure(sources.input_onsets, onsets)
    if to_input is not None:
        figures["note_onset_f1"], figures["note_onset_precision"], figures["note_onset_recall"] = to_input
        chance = chance_f1(sources.input_onsets, onsets, seconds)
        figures["note_onset_f1_chance"] = chance
        above = (to_input[0] - chance) / (1 - chance) if chance is not None and chance < 1 else 0.0
        figures["note_onset_f1_above_chance"] = max(0.0, above)
    to_target = _onset_f_measure(sources.target_onsets, onsets)
    figures["note_onset_f1_target"] = None if to_target is None else to_target[0]

    target_roll = sources.target_pitch_classes  # [T, P]
    if target_roll.any():
        frames = len(target_roll)
        output_roll = pitch_class_roll(notes, frames)  # [T, P]
        figures["pitch_class_recall"] = float((output_roll & target_roll).sum() / target_roll.sum())
        in_key = total = 0
        for note in notes:
            first, last = _frame_span(note, frames)
            total += last - first
            in_key += int(target_roll[first:last, note.pitch_class].sum())
        figures["pitch_class_precision"] = in_key / total if total else None
        precision, recall = figures["pitch_class_precision"] or 0.0, figures["pitch_class_recall"]
        figures["pitch_class_f1"] = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0

    if power is not None:
        figures["note_clarity"] = note_clarity(notes, power, sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length)
    return figures


def note_clarity(
    notes: list[Note] | tuple[Note, ...], power: np.ndarray, *, sample_rate: int, n_fft: int, hop_length: int
) -> float | None:
    """Share of ``power`` ([F, T], centred STFT frames) on the partials of ``notes`` while
    they sound; None for a silent clip, 0 for one without notes."""
    total = float(power.sum(dtype=np.float64))
    if total <= 0:
        return None
    bins, frames = power.shape
    bin_hz = sample_rate / n_fft
    frequencies = np.arange(bins) * bin_hz  # [F]
    mask = np.zeros((bins, frames), dtype=bool)  # [F, T]
    partials_cache: dict[int, np.ndarray] = {}
    for note in notes:
        if note.midi not in partials_cache:
            fundamental = 440.0 * 2 ** ((note.midi - 69) / 12)
            on_partial = np.zeros(bins, dtype=bool)
            for k in range(1, CLARITY_PARTIALS + 1):
                partial = k * fundamental
                if partial >= sample_rate / 2:
                    break
                tolerance = max(CLARITY_MIN_BINS * bin_hz, partial * QUARTER_TONE)
                on_partial |= np.abs(frequencies - partial) <= tolerance
            partials_cache[note.midi] = on_partial
        first = max(0, int(round(note.onset_seconds * sample_rate / hop_length)))
        last = min(frames, int(round(note.offset_seconds * sample_rate / hop_length)) + 1)
        if last > first:
            mask[:, first:last] |= partials_cache[note.midi][:, None]
    return float((power * mask).sum(dtype=np.float64) / total)
