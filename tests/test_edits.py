"""Edit pairs with known pointers: rendering, rule recordings, processing, corpus layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile

from jingle.datasets.alignment import pointers_from_edl
from jingle.datasets.edits import (
    RULES,
    make_conform_pair,
    make_rule_pair,
    music,
    process,
    random_conform_segments,
    render_edit,
    write_pointer_corpus,
)
from jingle.datasets.features import MelFeatures

FEATURES = MelFeatures()
HOP = FEATURES.hop_length
SILENT_RMS = 1e-3  # -60 dBFS: the rule recordings' gaps sit well below, music far above


def _frame_rms(audio: np.ndarray) -> np.ndarray:
    frames = len(audio) // HOP
    return np.sqrt(np.mean(audio[: frames * HOP].reshape(frames, HOP) ** 2, axis=1))


@pytest.fixture(scope="module")
def raw() -> np.ndarray:
    return music(8.0, FEATURES.sample_rate, np.random.default_rng(0))


def test_render_edit_invariants(raw):
    segments = [(100, 180), (20, 60), (60, 90), (300, 399)]  # (20, 60) -> (60, 90) is contiguous
    crossfade = 160
    edit, pointers = render_edit(raw, segments, FEATURES, crossfade_seconds=crossfade / FEATURES.sample_rate)
    raw_frames = FEATURES.frames_for(len(raw))
    assert edit.dtype == np.float32 and len(edit) == sum(end - start for start, end in segments) * HOP
    assert len(pointers) == FEATURES.frames_for(len(edit)) == FEATURES.log_mel(edit).shape[1]
    assert pointers.dtype == np.int64 and pointers.min() >= 0 and pointers.max() < raw_frames
    np.testing.assert_array_equal(pointers[:80], np.arange(100, 180))
    padded = np.concatenate([raw, np.zeros(raw_frames * HOP + crossfade - len(raw), dtype=np.float32)])
    edit_at = 0
    for index, (start, end) in enumerate(segments):
        piece = edit[edit_at : edit_at + (end - start) * HOP]
        source = padded[start * HOP : end * HOP]
        joined = index > 0 and segments[index - 1][1] != start
        skip = crossfade if joined else 0
        np.testing.assert_array_equal(piece[skip:], source[skip:])
        if joined:  # equal-power crossfade from the outgoing segment's continuation
            ramp = (np.arange(crossfade) + 0.5) / crossfade * (np.pi / 2)
            continuation = padded[segments[index - 1][1] * HOP :][:crossfade]
            np.testing.assert_allclose(piece[:crossfade], np.sin(ramp) * source[:crossfade] + np.cos(ramp) * continuation, atol=1e-6)
        edit_at += (end - start) * HOP
    with pytest.raises(ValueError, match="segment 0"):
        render_edit(raw, [(10, raw_frames + 1)], FEATURES)


def test_random_conform_segments_are_typical_edits():
    frame_rate = FEATURES.frame_rate
    for seed in range(20):
        segments = random_conform_segments(3000, np.random.default_rng(seed), frame_rate=frame_rate)
        assert len(segments) >= 2, "at least one jump"
        for (start, end), following in zip(segments, segments[1:] + [None]):
            assert 0 <= start < end <= 3000
            assert end - start >= frame_rate  # one second at least
            assert following is None or following[0] != end  # neighbours are merged
    assert random_conform_segments(30, np.random.default_rng(0), frame_rate=frame_rate) == [(0, 30)]


def test_remove_silence_rule():
    pair = make_rule_pair(0, "remove_silence", seconds=15.0, features=FEATURES)
    assert pair.kind == "remove_silence" and 3 <= len(pair.segments) <= 5
    assert len(pair.edit) < len(pair.raw)
    raw_rms = _frame_rms(pair.raw)
    assert (raw_rms < SILENT_RMS).sum() >= 2 * 0.5 * FEATURES.frame_rate - 8  # gaps of 0.5 s at least
    assert (_frame_rms(pair.edit) > SILENT_RMS).all()
    kept = np.zeros(len(raw_rms), dtype=bool)
    kept[pair.pointers] = True
    assert (raw_rms[~kept] < SILENT_RMS).mean() > 0.9  # what was dropped is the silence


def test_drop_false_start_rule():
    pair = make_rule_pair(1, "drop_false_start", seconds=15.0, features=FEATURES)
    [(start, end)] = pair.segments
    assert FEATURES.frame_rate * 1.3 <= start and end == FEATURES.frames_for(len(pair.raw))
    np.testing.assert_array_equal(pair.edit, pair.raw[start * HOP :])
    # The false start is the phrase's beginning (before its stop fade), then a pause.
    false_start = pair.raw[: int(0.9 * FEATURES.sample_rate)]
    np.testing.assert_array_equal(false_start, pair.raw[start * HOP : start * HOP + len(false_start)])
    assert _frame_rms(pair.raw[: start * HOP])[-5:].max() < SILENT_RMS


def test_loop_marked_section_rule():
    pair = make_rule_pair(2, "loop_marked_section", seconds=15.0, features=FEATURES)
    (_, section_end), (section_start, end) = pair.segments
    assert 2 * FEATURES.frame_rate <= section_end - section_start <= 5 * FEATURES.frame_rate
    counts = np.bincount(pair.pointers, minlength=end)
    assert (counts[section_start:section_end] == 2).all()
    assert (np.delete(counts, np.arange(section_start, section_end)) == 1).all()
    # Markers: a high beep at the section's first frames and in its last ones.
    spectrum_share = []
    for frame in (section_start, section_end - 2, (section_end + end) // 2):
        chunk = pair.raw[frame * HOP : frame * HOP + 2 * HOP]
        spectrum = np.abs(np.fft.rfft(chunk)) ** 2
        frequencies = np.fft.rfftfreq(len(chunk), 1 / FEATURES.sample_rate)
        spectrum_share.append(spectrum[np.abs(frequencies - 3000) < 150].sum() / spectrum.sum())
    assert min(spectrum_share[:2]) > 0.25 and min(spectrum_share[:2]) > 20 * spectrum_share[2], spectrum_share


def test_rules_are_checked():
    with pytest.raises(ValueError, match="unknown rule 'shuffle'"):
        make_rule_pair(0, "shuffle", seconds=15.0, features=FEATURES)


def test_pairs_are_deterministic_by_seed():
    first = make_conform_pair(5, seconds=6.0, features=FEATURES, processed=True)
    again = make_conform_pair(5, seconds=6.0, features=FEATURES, processed=True)
    other = make_conform_pair(6, seconds=6.0, features=FEATURES, processed=True)
    for field in ("raw", "edit", "pointers"):
        np.testing.assert_array_equal(getattr(first, field), getattr(again, field))
    assert first.segments == again.segments and first.processing == again.processing
    assert not np.array_equal(first.raw, other.raw)
    for rule in RULES:
        a, b = (make_rule_pair(3, rule, seconds=12.0, features=FEATURES) for _ in range(2))
        np.testing.assert_array_equal(a.edit, b.edit)
        assert a.segments == b.segments


def test_process_records_its_parameters(raw):
    processed, description = process(raw, FEATURES.sample_rate, np.random.default_rng(0))
    assert processed.dtype == np.float32 and processed.shape == raw.shape
    assert set(description) == {"strength", "tilt_db", "tilt_corner_hz", "compression_drive", "gain_db", "snr_db"}
    assert abs(description["gain_db"]) <= 6 and abs(description["tilt_db"]) <= 6 and 20 <= description["snr_db"] <= 35
    unchanged, _ = process(raw, FEATURES.sample_rate, np.random.default_rng(0), strength=0.0)
    np.testing.assert_allclose(unchanged, raw, atol=1e-5)


@pytest.mark.parametrize("labels", ["pointers", "edl", "none"])
def test_write_pointer_corpus_layout(tmp_path, labels):
    pairs = [
        make_conform_pair(0, seconds=5.0, features=FEATURES, processed=False),
        make_rule_pair(0, "drop_false_start", seconds=12.0, features=FEATURES),
    ]
    names = write_pointer_corpus(tmp_path, pairs, FEATURES, labels=labels)
    assert names == [pair.name for pair in pairs]
    expected_folders = {"raw", "edit"} | ({labels} if labels != "none" else set())
    assert {path.name for path in tmp_path.iterdir()} == expected_folders
    for pair in pairs:
        edit, sample_rate = soundfile.read(tmp_path / "edit" / f"{pair.name}.wav", dtype="float32")
        assert sample_rate == FEATURES.sample_rate
        np.testing.assert_array_equal(edit, pair.edit)
        assert soundfile.info(str(tmp_path / "raw" / f"{pair.name}.wav")).frames == len(pair.raw)
        if labels == "pointers":
            pointers = np.load(tmp_path / "pointers" / f"{pair.name}.npy")
            assert pointers.dtype == np.int64
            np.testing.assert_array_equal(pointers, pair.pointers)
        elif labels == "edl":
            edl = json.loads((tmp_path / "edl" / f"{pair.name}.json").read_text())
            assert all(len(segment) == 2 for segment in edl)
            edit_frames = FEATURES.frames_for(len(pair.edit))
            np.testing.assert_array_equal(pointers_from_edl(edl, FEATURES.frame_rate, edit_frames), pair.pointers)
    with pytest.raises(ValueError, match="labels"):
        write_pointer_corpus(tmp_path, pairs, FEATURES, labels="truth")
