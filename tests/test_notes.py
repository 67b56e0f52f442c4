"""evaluation/transcription.py and evaluation/notes.py: the notes the score hears, on hand-made cases.

The transcriber must give basic-pitch's own notes (a golden file made with basic-pitch 0.4.0
itself), and each note figure must move when what it names breaks: a rendered arrangement
scores high on all three; the same arrangement on the wrong chords loses its pitch classes
only; shifted 100 ms off the beat it loses its onsets only; smeared, it loses its onsets;
noise bursts lose clarity.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from jingle.datasets.synth import CorpusSpec, arrange, generate_pair
from jingle.evaluation import notes, transcription
from jingle.evaluation.arrangement import ANALYSIS_SAMPLE_RATE, N_FFT, HOP_LENGTH
from jingle.evaluation.shortcuts import smeared

GOLDEN = Path(__file__).parent / "data" / "basic_pitch_notes.json"
RATE = ANALYSIS_SAMPLE_RATE


def _as_rows(result: transcription.Transcription) -> list[list[float]]:
    return sorted([round(n.onset_seconds, 5), round(n.offset_seconds, 5), n.midi, round(n.amplitude, 5)] for n in result.notes)


def test_the_transcriber_gives_basic_pitchs_own_notes():
    golden = json.loads(GOLDEN.read_text())
    pair = generate_pair(3, CorpusSpec(pairs=1, min_seconds=6, max_seconds=6, mixed_formats=False))
    for name, audio in (("target", pair.target.audio), ("arrangement", pair.arrangement())):
        ours = _as_rows(transcription.transcribe(audio, pair.target.sample_rate))
        theirs = golden[name]
        assert len(ours) == len(theirs), name
        for mine, expected in zip(ours, theirs):
            assert mine[2] == expected[2], (name, mine, expected)  # pitch
            assert mine[:2] == pytest.approx(expected[:2], abs=1e-4), (name, mine, expected)  # times
            assert mine[3] == pytest.approx(expected[3], abs=2e-3), (name, mine, expected)  # resampling differs a little


def test_the_transcribed_chords_are_the_ones_played():
    pair = generate_pair(5, CorpusSpec(pairs=1, min_seconds=8, max_seconds=8, mixed_formats=False))
    chords = pair.target
    result = transcription.transcribe(chords.audio, chords.sample_rate)
    assert result.notes_per_second > 2
    in_chord_or_melody = 0
    for note in result.notes:
        middle = (note.onset_seconds + note.offset_seconds) / 2
        played = {round(n.midi) % 12 for n in chords.notes if n.seconds <= middle < n.seconds + n.duration_seconds}
        in_chord_or_melody += note.pitch_class in played
    # the rest are strong partials heard as notes of their own (an octave and a fifth up)
    assert in_chord_or_melody / len(result.notes) > 0.8


@dataclasses.dataclass(frozen=True)
class Case:
    sources: notes.NoteSources
    outputs: dict[str, np.ndarray]


@pytest.fixture(scope="module")
def case() -> Case:
    pair = generate_pair(7, CorpusSpec(pairs=1, min_seconds=10, max_seconds=10, mixed_formats=False))
    import librosa

    drums = librosa.resample(pair.input.audio, orig_sr=pair.input.sample_rate, target_sr=RATE)
    chords = librosa.resample(pair.target.audio, orig_sr=pair.target.sample_rate, target_sr=RATE)
    length = min(len(drums), len(chords))
    arrangement = arrange(pair.input, pair.target, RATE)[:length]
    # the same hits, voiced on chords a tritone away: every pitch class off the target's
    wrong = arrange(pair.input, dataclasses.replace(pair.target, root_midi=pair.target.root_midi + 6), RATE)[:length]
    shifted = np.concatenate([np.zeros(round(0.1 * RATE), np.float32), arrangement])[:length]
    rng = np.random.default_rng(0)
    bursts = arrangement + 3 * rng.standard_normal(length).astype(np.float32) * np.abs(drums)
    sources = notes.analyse_note_sources(
        notes.detect_onsets(drums[:length], RATE), transcription.transcribe(chords[:length], RATE), length / RATE
    )
    outputs = {"arrangement": arrangement, "wrong_chords": wrong, "shifted_100ms": shifted,
               "smeared": smeared(arrangement, RATE), "with_bursts": bursts}
    return Case(sources, outputs)


def _figures(case: Case, name: str) -> dict:
    import librosa

    audio = case.outputs[name]
    power = np.abs(librosa.stft(audio, n_fft=N_FFT, hop_length=HOP_LENGTH)) ** 2
    return notes.note_figures(case.sources, transcription.transcribe(audio, RATE), power=power, sample_rate=RATE,
                              n_fft=N_FFT, hop_length=HOP_LENGTH)


def test_a_rendered_arrangement_scores_high_on_every_note_figure(case):
    figures = _figures(case, "arrangement")
    assert figures["note_onset_f1"] > 0.85 and figures["note_onset_f1_above_chance"] > 0.7
    assert figures["note_onset_f1_chance"] < 0.6
    assert figures["pitch_class_precision"] > 0.85 and figures["pitch_class_recall"] > 0.45
    assert figures["note_clarity"] > 0.9


def test_wrong_chords_lose_the_pitch_classes_and_nothing_else(case):
    right, wrong = _figures(case, "arrangement"), _figures(case, "wrong_chords")
    assert wrong["pitch_class_precision"] < 0.3 < right["pitch_class_precision"] - 0.5
    assert wrong["pitch_class_f1"] < 0.3
    assert wrong["note_onset_f1"] == pytest.approx(right["note_onset_f1"], abs=0.1)
    assert wrong["note_clarity"] > 0.9


def test_notes_100_ms_off_the_beat_lose_the_onsets_and_nothing_else(case):
    right, shifted = _figures(case, "arrangement"), _figures(case, "shifted_100ms")
    assert shifted["note_onset_f1"] < 0.25 and shifted["note_onset_f1_above_chance"] < 0.1
    assert shifted["pitch_class_precision"] > right["pitch_class_precision"] - 0.1
    assert shifted["note_clarity"] > 0.9


def test_smear_loses_the_onsets_and_bursts_lose_the_clarity(case):
    right, smear, bursts = _figures(case, "arrangement"), _figures(case, "smeared"), _figures(case, "with_bursts")
    assert smear["note_onset_f1_above_chance"] < 0.2 < right["note_onset_f1_above_chance"] - 0.5
    assert bursts["note_clarity"] < right["note_clarity"] - 0.3


def test_chord_notes_are_one_onset_and_chance_is_what_random_onsets_reach():
    def note(onset: float, midi: int = 60) -> transcription.Note:
        return transcription.Note(onset, onset + 0.3, midi, 0.5)

    chord = [note(1.0, 60), note(1.012, 64), note(1.023, 67), note(2.0, 60), note(2.5, 62)]
    assert notes.note_onsets(chord).tolist() == [1.0, 2.0, 2.5]
    assert notes.note_onsets([]).size == 0

    rng = np.random.default_rng(1)
    reference = np.sort(rng.uniform(0, 60, 240))  # 4 onsets a second, no grid
    random_onsets = np.sort(rng.uniform(0, 60, 240))
    import mir_eval

    chance = notes.chance_f1(reference, random_onsets, 60.0)
    observed = mir_eval.onset.f_measure(reference, random_onsets, window=notes.ONSET_WINDOW_SECONDS)[0]
    assert chance == pytest.approx(observed, abs=0.08)  # random onsets sit at chance
    assert notes.chance_f1(reference, reference, 60.0) < 0.5  # the reference itself, shifted, is not
    assert notes.chance_f1(np.array([]), reference, 60.0) is None


def test_clarity_counts_the_energy_on_the_notes_partials():
    import librosa

    t = np.arange(2 * RATE) / RATE
    tone = sum(0.5**k * np.sin(2 * np.pi * 220 * (k + 1) * t) for k in range(5)).astype(np.float32)  # A3
    noise = np.random.default_rng(0).standard_normal(len(t)).astype(np.float32)
    a3 = [transcription.Note(0.0, 2.0, 57, 0.8)]

    def clarity(audio: np.ndarray, heard: list) -> float:
        power = np.abs(librosa.stft(audio, n_fft=N_FFT, hop_length=HOP_LENGTH)) ** 2
        return notes.note_clarity(heard, power, sample_rate=RATE, n_fft=N_FFT, hop_length=HOP_LENGTH)

    assert clarity(tone, a3) > 0.99
    # a tritone up (D#4): no partial of one lies on the other's (a semitone is closer than
    # the STFT's 10.8 Hz bins resolve at this pitch: pitch classes are harmony's business)
    assert clarity(tone, [transcription.Note(0.0, 2.0, 63, 0.8)]) < 0.05
    assert clarity(tone, []) == 0.0
    # white noise: the share of the band the 16 partials' windows cover (~16% at A3)
    assert clarity(noise, a3) < 0.2
    assert clarity(np.zeros_like(tone), a3) is None
