"""datasets/synth.py: the generated corpus, the parts' scores and the rendered arrangement."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from jingle.datasets.pairs import discover_fusion_pairs
from jingle.datasets.synth import (
    DRUM_KINDS,
    CorpusSpec,
    arrangement_notes,
    chords,
    drums,
    generate_pair,
    play_chords,
    play_drums,
    write_fusion_corpus,
)


def test_drums_and_chords_draw_and_play_as_before_the_parts_existed():
    # Pinned from the implementation before play_drums/play_chords: the random draws
    # (next value of the generator) and the audio (sum of |x|, loudest sample) of one seed.
    rng = np.random.default_rng(12)
    drum_audio = drums(3.0, 16_000, rng)
    after_drums = rng.random()
    chord_audio = chords(3.0, 16_000, rng)
    after_chords = rng.random()
    assert after_drums == pytest.approx(0.83938899096615, abs=1e-14)
    assert after_chords == pytest.approx(0.46085972967344624, abs=1e-14)
    assert float(np.abs(drum_audio).astype(np.float64).sum()) == pytest.approx(2938.1394492377685, rel=1e-6)
    assert float(np.abs(chord_audio).astype(np.float64).sum()) == pytest.approx(6110.4900577889, rel=1e-6)
    assert (int(np.argmax(np.abs(drum_audio))), int(np.argmax(np.abs(chord_audio)))) == (34, 36709)


def test_parts_return_the_same_audio_and_what_was_played():
    drum_part = play_drums(4.0, 22_050, np.random.default_rng(5))
    chord_part = play_chords(4.0, 22_050, np.random.default_rng(6))
    np.testing.assert_array_equal(drum_part.audio, drums(4.0, 22_050, np.random.default_rng(5)))
    np.testing.assert_array_equal(chord_part.audio, chords(4.0, 22_050, np.random.default_rng(6)))

    step = 60.0 / drum_part.tempo_bpm / 4
    kinds = {hit.kind for hit in drum_part.hits}
    assert kinds <= set(DRUM_KINDS) and "hat" in kinds
    # hats on the eighths, snares on the back-beat: times on the sixteenth grid
    for hit in drum_part.hits:
        position = round(hit.seconds / step)
        assert hit.seconds == pytest.approx(position * step)
        assert position % 2 == 0 if hit.kind == "hat" else True
        assert position % 16 in (4, 12) if hit.kind == "snare" else True
    first_kick = next(h for h in drum_part.hits if h.kind == "kick")
    assert np.abs(drum_part.audio[round(first_kick.seconds * 22_050) :][:200]).max() > 0.05

    assert chord_part.chord_at(0.0) == tuple(chord_part.root_midi + i for i in chord_part.progression[0])
    assert chord_part.chord_at(chord_part.bar_seconds * 1.5) == tuple(
        chord_part.root_midi + i for i in chord_part.progression[1]
    )
    assert len(chord_part.harmonics) == 6


def test_the_arrangement_plays_chord_tones_on_the_drum_hits():
    pair = generate_pair(3, CorpusSpec(min_seconds=6.0, max_seconds=6.0))
    notes = arrangement_notes(pair.input, pair.target)
    hits = [hit for hit in pair.input.hits if hit.seconds < pair.target.seconds]
    per_kind = {"kick": 1, "snare": 3, "hat": 1}
    assert len(notes) == sum(per_kind[hit.kind] for hit in hits)
    assert {note.seconds for _, note in notes} == {hit.seconds for hit in hits}
    for kind, note in notes:
        chord = pair.target.chord_at(note.seconds)
        assert note.midi % 12 in {m % 12 for m in chord}
        if kind == "kick":
            assert note.midi == chord[0] - 12  # the chord's root, below the chords

    audio = pair.arrangement(24_000)
    assert audio.dtype == np.float32 and len(audio) == round(pair.seconds * 24_000)
    assert np.abs(audio).max() == pytest.approx(0.7, rel=1e-6)
    # an attack on every hit: the 20 ms after a hit are louder than the 20 ms before it
    for seconds in sorted({hit.seconds for hit in hits} - {0.0}):
        start = round(seconds * 24_000)
        before, after = audio[start - 480 : start], audio[start : start + 480]
        assert np.abs(after).max() > np.abs(before).max()


def test_corpus_with_arrangements_keeps_the_pairs_and_their_audio(tmp_path):
    spec = CorpusSpec(pairs=3, min_seconds=1.0, max_seconds=2.0, seed=4)
    plain = write_fusion_corpus(tmp_path / "plain", spec)
    ids = write_fusion_corpus(tmp_path / "full", spec, arrangements=True)
    assert ids == plain

    found = discover_fusion_pairs(tmp_path / "full")
    assert [pair.pair_id for pair in found.pairs] == ids
    assert found.rejects == []
    assert all("/arrangement/" not in pair.input_path + pair.target_path for pair in found.pairs)

    for pair_id in ids:
        for role in ("input", "target"):
            a, rate_a = soundfile.read(tmp_path / "plain" / role / f"{pair_id}.wav")
            b, rate_b = soundfile.read(tmp_path / "full" / role / f"{pair_id}.wav")
            assert rate_a == rate_b
            np.testing.assert_array_equal(a, b)
        target = soundfile.info(str(tmp_path / "full" / "target" / f"{pair_id}.wav"))
        arrangement = soundfile.info(str(tmp_path / "full" / "arrangement" / f"{pair_id}.wav"))
        assert (arrangement.samplerate, arrangement.channels, arrangement.subtype, arrangement.frames) == (
            target.samplerate,
            target.channels,
            target.subtype,
            target.frames,
        )


def test_the_other_style_plays_other_grooves_tempi_and_chords_under_the_same_rule():
    from jingle.datasets.synth import STYLES

    pop, other = STYLES["pop"], STYLES["other"]
    pairs = [generate_pair(index, CorpusSpec(min_seconds=8.0, max_seconds=8.0, style="other")) for index in range(4)]
    for pair in pairs:
        drums_part, chords_part = pair.input, pair.target
        assert other.tempo_bpm[0] <= drums_part.tempo_bpm < other.tempo_bpm[1] < pop.tempo_bpm[0] + 1e-9
        step = 60.0 / drums_part.tempo_bpm / 4
        hats = [hit for hit in drums_part.hits if hit.kind == "hat"]
        # hats on every sixteenth, the off-beat ones swung late by 30% of a sixteenth
        swung = [hit.seconds / step % 1 for hit in hats]
        assert any(abs(fraction - 0.3) < 1e-6 for fraction in swung) and any(fraction < 1e-6 for fraction in swung)
        assert all(round(hit.seconds / step) % 16 == 8 for hit in drums_part.hits if hit.kind == "snare")
        # a minor progression in a register below pop's, with longer bars and more partials
        assert chords_part.progression == other.progression and other.tonic_midi[1] <= pop.tonic_midi[0] + 4
        assert other.bar_seconds[0] <= chords_part.bar_seconds < other.bar_seconds[1]
        assert len(chords_part.harmonics) == 8
        # the arrangement rule is the style's own chords on the style's hits
        for kind, note in arrangement_notes(drums_part, chords_part):
            assert note.midi % 12 in {midi % 12 for midi in chords_part.chord_at(note.seconds)}
    with pytest.raises(ValueError, match="style must be one of"):
        CorpusSpec(style="jazz")
