"""The pointer example and its batches (datasets/pointer_sample.py): sample checks, rows to
samples, length caps, bucketing, and padding."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from jingle.datasets.pointer_sample import PointerSample, bucketed, cap_lengths, pad_pointer_samples, samples_from_rows

MEL_BINS = 16


def sample_with(pointers: list[int], raw_frames: int) -> PointerSample:
    raw = torch.arange(raw_frames, dtype=torch.float32).repeat(2, 1)  # [2, T_raw], frame i holds i
    pointers = torch.tensor(pointers, dtype=torch.int64)
    return PointerSample(raw, raw[:, pointers].clone(), pointers, torch.rand(len(pointers)))


@settings(max_examples=60, deadline=None)
@given(
    raw_frames=st.integers(1, 400),
    data=st.data(),
    max_edit=st.integers(1, 80),
    max_raw=st.integers(1, 120),
    keep_start=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_capped_samples_keep_every_pointer_on_its_frame(raw_frames, data, max_edit, max_raw, keep_start, seed):
    pointers = data.draw(st.lists(st.integers(0, raw_frames - 1), min_size=1, max_size=200))
    sample = sample_with(pointers, raw_frames)
    capped, ends = cap_lengths(sample, max_edit_frames=max_edit, max_raw_frames=max_raw, keep_start=keep_start,
                               generator=torch.Generator().manual_seed(seed))
    assert 1 <= capped.edit_frames <= max_edit and capped.raw_frames <= max_raw or capped is sample
    # raw frame values are their original indices, so the pointed-at frame is checkable
    assert torch.equal(capped.raw_mel[0, capped.pointers], capped.edit_mel[0])
    if keep_start:
        assert torch.equal(capped.edit_mel, sample.edit_mel[:, : capped.edit_frames])
        assert ends == (capped.edit_frames == sample.edit_frames)
    if capped.edit_frames == sample.edit_frames:
        assert ends


def test_raw_window_placement_is_random_in_conform_and_fixed_in_edit_mode():
    sample = sample_with(list(range(300, 340)), raw_frames=1000)
    offsets = {
        int(cap_lengths(sample, max_edit_frames=40, max_raw_frames=200, keep_start=False, generator=torch.Generator().manual_seed(s))[0].pointers[0])
        for s in range(30)
    }
    assert len(offsets) > 10
    capped, ends = cap_lengths(sample, max_edit_frames=20, max_raw_frames=400, keep_start=True, generator=torch.Generator())
    assert capped.raw_mel[0, 0] == 0 and capped.pointers.tolist() == list(range(300, 320)) and not ends


def test_bucketing_groups_similar_lengths_and_loses_no_full_batch():
    samples = [(sample_with(list(range(n)), raw_frames=n), True) for n in np.random.default_rng(0).integers(1, 300, size=23)]
    batches = list(bucketed(iter(samples), batch_size=4, bucket_batches=3, generator=torch.Generator().manual_seed(0)))
    assert len(batches) == 23 // 4 and all(len(batch) == 4 for batch in batches)
    spreads = [max(s.edit_frames for s, _ in b) - min(s.edit_frames for s, _ in b) for b in batches]
    assert np.mean(spreads) < 100  # unsorted batches of lengths 1..300 would spread ~200


def test_rows_become_samples_with_confidence_weights():
    rows = {
        "raw_frames": np.array([3]), "edit_frames": np.array([2]),
        "raw_mel": np.array([np.arange(6, dtype=np.float32)], dtype=object),
        "edit_mel": np.array([np.arange(4, dtype=np.float32)], dtype=object),
        "pointers": np.array([np.array([2, 0])], dtype=object),
        "confidence": np.array([np.array([0.9, 0.2], dtype=np.float32)], dtype=object),
    }
    (sample,) = samples_from_rows(rows, min_confidence=0.5)
    assert sample.raw_mel.shape == (2, 3) and sample.edit_mel.shape == (2, 2)
    assert sample.pointers.tolist() == [2, 0] and sample.weights.tolist() == [np.float32(0.9), 0.0]


def test_pointer_sample_rejects_bad_pointers():
    raw_mel = torch.zeros(2, 4)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        PointerSample(raw_mel, torch.zeros(2, 1), torch.tensor([4]))
    with pytest.raises(ValueError, match="int64"):
        PointerSample(raw_mel, torch.zeros(2, 1), torch.tensor([1], dtype=torch.int32))
    with pytest.raises(ValueError, match="weights"):
        PointerSample(raw_mel, torch.zeros(2, 1), torch.tensor([1]), torch.ones(2))


def test_pad_pointer_samples_pads_with_masks():
    long = SimpleNamespace(
        raw_mel=torch.ones(MEL_BINS, 10), edit_mel=torch.full((MEL_BINS, 4), 2.0), pointers=torch.tensor([0, 1, 2, 9]), weights=None
    )
    short = SimpleNamespace(
        raw_mel=torch.ones(MEL_BINS, 6), edit_mel=torch.full((MEL_BINS, 7), 3.0), pointers=torch.arange(7) % 6,
        weights=torch.linspace(0.1, 0.7, 7),
    )
    batch = pad_pointer_samples([long, short])
    assert batch.raw_mel.shape == (2, MEL_BINS, 10) and batch.edit_mel.shape == (2, MEL_BINS, 7)
    assert batch.raw_lengths.tolist() == [10, 6] and batch.edit_lengths.tolist() == [4, 7]
    assert batch.pointers.dtype == torch.int64 and batch.weights.dtype == torch.float32
    assert batch.pointers[0].tolist() == [0, 1, 2, 9, -1, -1, -1]
    assert batch.weights[0].tolist() == [1, 1, 1, 1, 0, 0, 0]
    torch.testing.assert_close(batch.weights[1], short.weights)
    assert (batch.raw_mel[1, :, 6:] == 0).all() and (batch.edit_mel[0, :, 4:] == 0).all()
    assert batch.ends.tolist() == [True, True]
    assert pad_pointer_samples([long, short], ends=[True, False]).ends.tolist() == [True, False]
    assert torch.equal(batch.to("cpu").pointers, batch.pointers)
    with pytest.raises(ValueError, match="sample 1"):
        pad_pointer_samples([long, SimpleNamespace(raw_mel=torch.ones(3, 5), edit_mel=short.edit_mel, pointers=short.pointers, weights=None)])
