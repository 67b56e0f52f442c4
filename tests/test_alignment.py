"""Dynamic-programming alignment: recovery of known pointers, the path search, EDLs."""

from __future__ import annotations

import numpy as np
import pytest

from jingle.datasets.alignment import (
    Alignment,
    AlignmentConfig,
    Segment,
    align,
    edl_from_pointers,
    frame_confidence,
    frame_similarity,
    pointers_from_edl,
    segments_from_pointers,
    viterbi,
)
from jingle.datasets.edits import make_conform_pair, render_edit
from jingle.datasets.features import MelFeatures

FEATURES = MelFeatures()
TOLERANCE_FRAMES = 2


def _pair_mels(processed: bool) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    pairs = [
        make_conform_pair(seed, seconds=20.0 + 3 * seed, features=FEATURES, processed=processed) for seed in range(4)
    ]
    return [(FEATURES.log_mel(pair.raw), FEATURES.log_mel(pair.edit), pair.pointers) for pair in pairs]


@pytest.fixture(scope="module")
def clean_mels():
    return _pair_mels(processed=False)


@pytest.fixture(scope="module")
def clean_alignments(clean_mels) -> list[Alignment]:
    return [align(raw_mel, edit_mel) for raw_mel, edit_mel, _ in clean_mels]


def _pooled_hits(alignments: list[Alignment], mels) -> float:
    hits = sum(int((np.abs(found.pointers - truth) <= TOLERANCE_FRAMES).sum()) for found, (_, _, truth) in zip(alignments, mels))
    return hits / sum(len(truth) for _, _, truth in mels)


def test_alignment_recovers_clean_conform_pointers(clean_mels, clean_alignments):
    fraction = _pooled_hits(clean_alignments, clean_mels)
    print(f"clean conform pairs: {fraction:.2%} of edit frames within ±{TOLERANCE_FRAMES} frames")
    assert fraction >= 0.95
    for found, (_, edit_mel, _) in zip(clean_alignments, clean_mels):
        assert found.pointers.dtype == np.int64 and found.pointers.shape == (edit_mel.shape[1],)


def test_processed_pairs_mostly_align():
    mels = _pair_mels(processed=True)
    fraction = _pooled_hits([align(raw_mel, edit_mel) for raw_mel, edit_mel, _ in mels], mels)
    print(f"processed conform pairs: {fraction:.2%} of edit frames within ±{TOLERANCE_FRAMES} frames")
    assert fraction >= 0.6


def test_confidence_high_on_clean_pairs_low_on_unrelated_noise(clean_mels, clean_alignments):
    clean = np.concatenate([found.confidence for found in clean_alignments])
    raw_mel = clean_mels[0][0]
    noise = np.random.default_rng(0).standard_normal(10 * FEATURES.sample_rate).astype(np.float32) * 0.1
    unrelated = align(raw_mel, FEATURES.log_mel(noise))
    print(f"mean confidence: clean {clean.mean():.3f}, unrelated noise {unrelated.confidence.mean():.3f}")
    for confidence in (clean, unrelated.confidence):
        assert confidence.dtype == np.float32 and confidence.min() >= 0 and confidence.max() <= 1
    assert clean.mean() > 0.7
    assert unrelated.confidence.mean() < 0.2
    assert min(found.score for found in clean_alignments) > 0.9
    assert unrelated.score < 0.5


def test_frame_similarity_ignores_gain():
    mel = np.random.default_rng(1).normal(size=(16, 9)).astype(np.float32)
    similarity = frame_similarity(mel, mel + 3.0)  # +3 in natural-log units: a gain of 26 dB
    assert similarity.shape == (9, 9) and similarity.dtype == np.float32
    np.testing.assert_allclose(np.diag(similarity), 1.0, atol=1e-5)
    assert (similarity - np.eye(9) < 0.9).all()


# --------------------------------------------------------------------------- viterbi


def _reference_viterbi(score: np.ndarray, jump_penalty: float, stay_penalty: float) -> np.ndarray:
    """Plain DP with one full integer backpointer per cell."""
    rows, cols = score.shape
    value = score[0].astype(np.float64)
    back = np.zeros((rows, cols), dtype=np.int64)
    for row in range(1, rows):
        source = int(np.argmax(value))
        new = np.empty(cols)
        for col in range(cols):
            options = [(value[col] - stay_penalty, col), (value[source] - jump_penalty, source)]
            if col > 0:
                options.append((value[col - 1], col - 1))
            best, back[row, col] = max(options)
            new[col] = best + score[row, col]
        value = new
    path = [int(np.argmax(value))]
    for row in range(rows - 1, 0, -1):
        path.append(int(back[row, path[-1]]))
    return np.array(path[::-1])


def _path_value(score: np.ndarray, path: np.ndarray, jump_penalty: float, stay_penalty: float) -> float:
    steps = np.diff(path)
    penalties = np.where(steps == 1, 0.0, np.where(steps == 0, min(stay_penalty, jump_penalty), jump_penalty))
    return float(score[np.arange(len(path)), path].sum() - penalties.sum())


@pytest.mark.parametrize("jump_penalty, stay_penalty", [(1.0, 0.2), (0.3, 0.8), (2.0, 1.5), (0.0, 0.0)])
def test_packed_backpointers_match_unpacked_reference(jump_penalty, stay_penalty):
    rng = np.random.default_rng(7)
    score = rng.normal(size=(41, 19)).astype(np.float32)
    expected = _reference_viterbi(score, jump_penalty, stay_penalty)
    # block_rows=4: many checkpoints, so the backtrack replays blocks.
    found = viterbi(score, jump_penalty=jump_penalty, stay_penalty=stay_penalty, block_rows=4)
    assert _path_value(score, found, jump_penalty, stay_penalty) == pytest.approx(
        _path_value(score, expected, jump_penalty, stay_penalty), abs=1e-4
    )
    if jump_penalty > 0:  # with free jumps, ties make several paths equally good
        np.testing.assert_array_equal(found, expected)


def test_viterbi_follows_a_known_path_with_a_jump_and_a_stay():
    truth = np.concatenate([np.arange(5, 20), [19, 19], np.arange(40, 52), np.arange(8, 14)])
    rng = np.random.default_rng(3)
    score = rng.uniform(0.0, 0.3, size=(len(truth), 60)).astype(np.float32)
    score[np.arange(len(truth)), truth] = 1.0
    np.testing.assert_array_equal(viterbi(score, jump_penalty=1.5, stay_penalty=0.2), truth)


def test_viterbi_on_log_probabilities():
    truth = np.concatenate([np.arange(30, 50), np.arange(0, 25)])
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(len(truth), 64))
    logits[np.arange(len(truth)), truth] += 3.0
    log_probabilities = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    found = viterbi(log_probabilities, jump_penalty=8.0, stay_penalty=4.0)
    np.testing.assert_array_equal(found, truth)


def test_viterbi_edge_shapes():
    assert viterbi(np.zeros((0, 5)), jump_penalty=1, stay_penalty=1).shape == (0,)
    np.testing.assert_array_equal(viterbi(np.ones((4, 1)), jump_penalty=1, stay_penalty=1), [0, 0, 0, 0])
    mel = np.zeros((8, 3), dtype=np.float32)
    empty = align(mel, np.zeros((8, 0), dtype=np.float32))
    assert empty.pointers.shape == (0,) and empty.confidence.shape == (0,)
    single = align(mel[:, :1], mel)
    np.testing.assert_array_equal(single.pointers, [0, 0, 0])
    with pytest.raises(ValueError, match="score matrix"):
        viterbi(np.zeros(5), jump_penalty=1, stay_penalty=1)


def test_frame_confidence_is_a_probability_mass():
    score = np.full((3, 10), -1.0, dtype=np.float32)
    score[0, 4] = 1.0  # one clear match
    confidence = frame_confidence(score, np.array([4, 4, 0]), radius=1, temperature=0.05)
    assert confidence[0] == pytest.approx(1.0, abs=1e-6)
    assert confidence[1] == pytest.approx(0.3)  # flat row: 3 of 10 frames
    assert confidence[2] == pytest.approx(0.2)  # radius clipped at the start


def test_config_is_validated():
    with pytest.raises(ValueError, match="-1"):
        AlignmentConfig(jump_penalty=-1)
    with pytest.raises(ValueError, match="temperature.*0"):
        AlignmentConfig(temperature=0)
    with pytest.raises(ValueError, match="confidence_radius"):
        AlignmentConfig(confidence_radius=-2)


# ------------------------------------------------------------------ decision lists


def test_segments_from_pointers_edge_cases():
    assert segments_from_pointers(np.zeros(0, dtype=np.int64)) == []
    assert segments_from_pointers(np.array([5])) == [Segment(5, 6, 0, 1.0)]
    assert segments_from_pointers(np.array([3, 10, 2])) == [Segment(3, 4, 0, 1.0), Segment(10, 11, 1, 1.0), Segment(2, 3, 2, 1.0)]
    jittery = np.array([10, 11, 13, 14, 15, 40, 41])
    assert [(s.raw_start, s.raw_end) for s in segments_from_pointers(jittery)] == [(10, 12), (13, 16), (40, 42)]
    assert [(s.raw_start, s.raw_end) for s in segments_from_pointers(jittery, tolerance=1)] == [(10, 16), (40, 42)]
    confidence = np.array([1.0, 0.5, 0.0, 0.0, 0.0, 1.0, 1.0])
    assert [s.confidence for s in segments_from_pointers(jittery, confidence, tolerance=1)] == pytest.approx([0.3, 1.0])


def test_pointers_and_edl_round_trip():
    pointers = np.concatenate([np.arange(100, 180), np.arange(20, 60), np.arange(180, 300)])
    edl = edl_from_pointers(pointers, FEATURES.frame_rate)
    assert [(entry["start_s"], entry["end_s"], entry["edit_start_s"]) for entry in edl] == [
        (2.0, 3.6, 0.0), (0.4, 1.2, 1.6), (3.6, 6.0, 2.4)
    ]
    seconds = [[entry["start_s"], entry["end_s"]] for entry in edl]
    np.testing.assert_array_equal(pointers_from_edl(seconds, FEATURES.frame_rate), pointers)
    np.testing.assert_array_equal(pointers_from_edl(seconds, FEATURES.frame_rate, len(pointers)), pointers)
    # Rounding at the boundaries: the last segment is trimmed or extended to the edit.
    np.testing.assert_array_equal(pointers_from_edl(seconds, FEATURES.frame_rate, len(pointers) - 2), pointers[:-2])
    np.testing.assert_array_equal(pointers_from_edl(seconds, FEATURES.frame_rate, len(pointers) + 1), np.append(pointers, 300))
    with pytest.raises(ValueError, match=f"covers {len(pointers)} frames but the edit has {len(pointers) + 50}"):
        pointers_from_edl(seconds, FEATURES.frame_rate, len(pointers) + 50)
    with pytest.raises(ValueError, match="segment 0"):
        pointers_from_edl([[2.0, 1.0]], FEATURES.frame_rate)


def test_alignment_edl_of_a_rendered_edit_matches_its_segments():
    pair = make_conform_pair(11, seconds=20.0, features=FEATURES, processed=False)
    edit, _ = render_edit(pair.raw, pair.segments, FEATURES)
    found = align(FEATURES.log_mel(pair.raw), FEATURES.log_mel(edit))
    edl = edl_from_pointers(found.pointers, FEATURES.frame_rate, found.confidence)
    assert len(edl) == len(pair.segments)
    for entry, (start, end) in zip(edl, pair.segments):
        assert abs(entry["start_s"] * FEATURES.frame_rate - start) <= TOLERANCE_FRAMES
        assert abs(entry["end_s"] * FEATURES.frame_rate - end) <= TOLERANCE_FRAMES
        assert 0 <= entry["confidence"] <= 1
