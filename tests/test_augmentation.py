"""Pointer-network augmentation (plan 002): pointer validity, shared masks, seeding.

Samples are built so that equality means identity: raw frame t of sample s holds
``s * 100_000 + t`` (plus the mel bin), every edit frame is a copy of the raw frame it
points to, and the weights are the edit frame indices, so after any augmentation
``weights[j]`` says which original edit frame j is.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from jingle.datasets.augmentation import (
    Augmentor,
    add_noise,
    apply_gain,
    channel_dropout,
    chunk_shuffle,
    concatenate_samples,
    freq_mask,
    random_crop,
    time_mask,
)
from jingle.datasets.augmentation_config import AugmentationConfig, ConcatenationConfig
from jingle.datasets.pointer_sample import PointerSample

FAST = settings(max_examples=40, deadline=None)



def make_sample(pointers: list[int], raw_frames: int, *, mel_bins: int = 3, sample_id: int = 0) -> PointerSample:
    """Raw frames unique across samples; edit frame j is a copy of raw frame pointers[j]."""
    frame_ids = sample_id * 100_000 + torch.arange(raw_frames, dtype=torch.float32)  # [T_raw]
    raw_mel = frame_ids[None, :] + 0.25 * torch.arange(mel_bins, dtype=torch.float32)[:, None]  # [M, T_raw]
    pointer_tensor = torch.tensor(pointers, dtype=torch.int64)  # [T_edit]
    return PointerSample(
        raw_mel=raw_mel,
        edit_mel=raw_mel[:, pointer_tensor],
        pointers=pointer_tensor,
        weights=torch.arange(len(pointers), dtype=torch.float32),
    )


@st.composite
def samples(draw, max_raw: int = 60, max_edit: int = 40, sample_id: int = 0) -> PointerSample:
    raw_frames = draw(st.integers(1, max_raw))
    pointers = draw(st.lists(st.integers(0, raw_frames - 1), max_size=max_edit))
    return make_sample(pointers, raw_frames, mel_bins=draw(st.integers(1, 3)), sample_id=sample_id)


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def snapshot(sample: PointerSample) -> list[torch.Tensor]:
    return [tensor.clone() for tensor in (sample.raw_mel, sample.edit_mel, sample.pointers, sample.weights)]


def assert_untouched(sample: PointerSample, before: list[torch.Tensor]) -> None:
    for tensor, copy in zip((sample.raw_mel, sample.edit_mel, sample.pointers, sample.weights), before):
        assert torch.equal(tensor, copy)


def assert_points_to(raw_after, pointers_after, raw_before, pointers_before) -> None:
    """Every edit frame points into the new raw, at the frame it pointed to before."""
    assert pointers_after.dtype == torch.int64 and raw_after.dtype == torch.float32
    if len(pointers_after):
        assert 0 <= int(pointers_after.min()) and int(pointers_after.max()) < raw_after.shape[1]
    assert torch.equal(raw_after[:, pointers_after], raw_before[:, pointers_before])


# ------------------------------------------------------------------ B1 chunk shuffle


@FAST
@given(sample=samples(), chunk_size=st.integers(1, 25), seed=st.integers(0, 2**32))
def test_chunk_shuffle_keeps_every_pointer_on_its_frame(sample, chunk_size, seed):
    before = snapshot(sample)
    result = chunk_shuffle(sample.raw_mel, sample.edit_mel, sample.pointers, chunk_size=chunk_size, generator=generator(seed))
    assert result.raw_mel.shape == sample.raw_mel.shape
    assert result.edit_mel is sample.edit_mel
    assert_points_to(result.raw_mel, result.pointers, sample.raw_mel, sample.pointers)
    # The raw is a permutation of whole chunks: the same frames, each chunk contiguous.
    assert torch.equal(result.raw_mel[0].sort().values, sample.raw_mel[0].sort().values)
    assert sorted(result.chunk_order.tolist()) == list(range(-(-sample.raw_frames // chunk_size)))
    assert_untouched(sample, before)


@pytest.mark.parametrize("raw_frames", [5, 10], ids=["shorter-than-a-chunk", "exactly-one-chunk"])
def test_chunk_shuffle_with_one_chunk_changes_nothing(raw_frames):
    sample = make_sample([0, raw_frames - 1], raw_frames)
    result = chunk_shuffle(sample.raw_mel, sample.edit_mel, sample.pointers, chunk_size=10, generator=generator())
    assert result.raw_mel is sample.raw_mel and result.pointers is sample.pointers


def test_chunk_shuffle_counts_the_remainder_as_a_chunk():
    sample = make_sample([0, 10, 11], raw_frames=12)  # chunks [0, 10) and [10, 12)
    moved = [
        chunk_shuffle(sample.raw_mel, sample.edit_mel, sample.pointers, chunk_size=10, generator=generator(seed))
        for seed in range(20)
    ]
    swapped = [result for result in moved if result.chunk_order.tolist() == [1, 0]]
    assert swapped, "20 seeds never swapped two chunks"
    assert swapped[0].pointers.tolist() == [2, 0, 1]


def test_chunk_shuffle_with_no_edit_frames():
    sample = make_sample([], raw_frames=30)
    result = chunk_shuffle(sample.raw_mel, sample.edit_mel, sample.pointers, chunk_size=10, generator=generator())
    assert result.pointers.shape == (0,) and result.pointers.dtype == torch.int64


def test_chunk_shuffle_remaps_a_long_recording_with_tensor_indexing():
    raw_frames = 200_000
    pointers = torch.randint(0, raw_frames, (raw_frames,), generator=generator())
    sample = make_sample(pointers.tolist(), raw_frames, mel_bins=2)
    result = chunk_shuffle(sample.raw_mel, sample.edit_mel, sample.pointers, chunk_size=100, generator=generator(1))
    assert torch.equal(result.raw_mel[:, result.pointers], sample.edit_mel)


# ------------------------------------------------------------------------- B2 crop


@FAST
@given(
    sample=samples(),
    min_len=st.integers(1, 50),
    extra=st.integers(0, 50),
    context_pad=st.integers(0, 10),
    seed=st.integers(0, 2**32),
)
def test_random_crop_keeps_every_pointer_on_its_frame(sample, min_len, extra, context_pad, seed):
    before = snapshot(sample)
    result = random_crop(
        sample.raw_mel,
        sample.edit_mel,
        sample.pointers,
        min_len=min_len,
        max_len=min_len + extra,
        context_pad=context_pad,
        generator=generator(seed),
    )
    kept = result.edit_mel.shape[1]
    if sample.edit_frames:
        assert min(min_len, sample.edit_frames) <= kept <= min(min_len + extra, sample.edit_frames)
    original = slice(result.edit_start, result.edit_start + kept)
    assert torch.equal(result.edit_mel, sample.edit_mel[:, original])
    assert_points_to(result.raw_mel, result.pointers, sample.raw_mel, sample.pointers[original])
    assert torch.equal(result.raw_mel, sample.raw_mel[:, result.raw_start : result.raw_start + result.raw_mel.shape[1]])
    assert_untouched(sample, before)


def test_random_crop_with_no_edit_frames_changes_nothing():
    sample = make_sample([], raw_frames=20)
    result = random_crop(
        sample.raw_mel, sample.edit_mel, sample.pointers, min_len=5, max_len=10, context_pad=2, generator=generator()
    )
    assert result.raw_mel is sample.raw_mel and result.edit_mel is sample.edit_mel and result.edit_start == 0


def test_random_crop_longer_than_the_edit_keeps_the_edit_and_cuts_the_raw_to_context():
    sample = make_sample([10, 12, 11], raw_frames=40)
    result = random_crop(
        sample.raw_mel, sample.edit_mel, sample.pointers, min_len=500, max_len=5000, context_pad=3, generator=generator()
    )
    assert torch.equal(result.edit_mel, sample.edit_mel) and result.edit_start == 0
    # up to 3 frames of context each side of frames 10..12, drawn per side
    raw_end = result.raw_start + result.raw_mel.shape[1]
    assert 7 <= result.raw_start <= 10 and 13 <= raw_end <= 16
    assert result.pointers.tolist() == [10 - result.raw_start, 12 - result.raw_start, 11 - result.raw_start]


def test_random_crop_context_varies_so_the_kept_frames_move():
    sample = make_sample([20, 21, 22], raw_frames=60)
    starts = {
        random_crop(sample.raw_mel, sample.edit_mel, sample.pointers, min_len=3, max_len=3, context_pad=10,
                    generator=torch.Generator().manual_seed(seed)).pointers[0].item()
        for seed in range(20)
    }
    assert len(starts) > 5 and min(starts) >= 0 and max(starts) <= 10


def test_random_crop_of_one_frame():
    sample = make_sample([0], raw_frames=1)
    result = random_crop(
        sample.raw_mel, sample.edit_mel, sample.pointers, min_len=1, max_len=1, context_pad=100, generator=generator()
    )
    assert result.pointers.tolist() == [0] and torch.equal(result.raw_mel, sample.raw_mel)


# ------------------------------------------------------------------ B3 concatenation


@FAST
@given(first=samples(sample_id=1), second=samples(sample_id=2))
def test_concatenate_samples_offsets_the_second_pointers(first, second):
    if first.mel_bins != second.mel_bins:
        with pytest.raises(ValueError, match="mel bins"):
            concatenate_samples(first, second)
        return
    joined = concatenate_samples(first, second)
    assert joined.raw_frames == first.raw_frames + second.raw_frames
    assert_points_to(
        joined.raw_mel[:, : first.raw_frames], joined.pointers[: first.edit_frames], first.raw_mel, first.pointers
    )
    assert_points_to(joined.raw_mel, joined.pointers, joined.raw_mel, joined.pointers)  # in range
    assert torch.equal(joined.raw_mel[:, joined.pointers[first.edit_frames :]], second.edit_mel)
    assert torch.equal(joined.weights, torch.cat([first.weights, second.weights]))


def test_concatenate_samples_gives_ones_to_a_sample_without_weights():
    first = make_sample([1, 0], raw_frames=2)
    second = PointerSample(first.raw_mel, first.edit_mel, first.pointers)
    assert concatenate_samples(first, second).weights.tolist() == [0.0, 1.0, 1.0, 1.0]
    assert concatenate_samples(second, second).weights is None


@FAST
@given(
    batch=st.lists(st.integers(0, 30), min_size=0, max_size=6),
    max_frames=st.integers(1, 80),
    pairing=st.sampled_from(["random", "similar_length"]),
    batch_index=st.integers(0, 1000),
)
def test_augmentor_concatenate_keeps_every_sample_once_within_the_cap(batch, max_frames, pairing, batch_index):
    inputs = [make_sample(list(range(edit_frames)), 30, mel_bins=2, sample_id=i + 1) for i, edit_frames in enumerate(batch)]
    config = AugmentationConfig(
        concatenation=ConcatenationConfig(enabled=True, probability=1.0, max_frames=max_frames, pairing=pairing)
    )
    outputs = Augmentor(config, seed=3).concatenate(inputs, epoch=0, batch_index=batch_index)
    for output in outputs:
        if not any(output is sample for sample in inputs):
            assert output.raw_frames <= max_frames and output.edit_frames <= max_frames
        assert torch.equal(output.raw_mel[:, output.pointers], output.edit_mel)
    # Each input's raw appears exactly once (raw frame values name their sample).
    sample_ids = sorted({int(value) // 100_000 for output in outputs for value in output.raw_mel[0]})
    assert sample_ids == list(range(1, len(inputs) + 1))
    assert sum(output.raw_frames for output in outputs) == 30 * len(inputs)


def test_augmentor_concatenate_respects_probability_and_warmup():
    inputs = [make_sample([0, 1], 2, sample_id=i) for i in range(4)]
    never = AugmentationConfig(concatenation=ConcatenationConfig(enabled=True, probability=0.0))
    assert Augmentor(never, seed=0).concatenate(inputs, epoch=0, batch_index=0) == inputs
    warming = AugmentationConfig(warmup_epochs=2, concatenation=ConcatenationConfig(enabled=True, probability=1.0))
    assert Augmentor(warming, seed=0).concatenate(inputs, epoch=1, batch_index=0) == inputs
    assert len(Augmentor(warming, seed=0).concatenate(inputs, epoch=2, batch_index=0)) == 2


# ------------------------------------------------------------------- A augmentations


def log_mel_pair(raw_frames: int = 40, edit_frames: int = 30, mel_bins: int = 8, seed: int = 0):
    random = generator(seed)
    return (
        torch.randn(mel_bins, raw_frames, generator=random) - 5,  # [M, T_raw]; no zeros
        torch.randn(mel_bins, edit_frames, generator=random) - 5,  # [M, T_edit]
    )


def masked_rows(mel: torch.Tensor, value: float) -> list[int]:
    return [row for row in range(mel.shape[0]) if bool((mel[row] == value).all())]


@pytest.mark.parametrize("fill", ["mean", "zero"])
def test_freq_mask_masks_the_same_bands_on_both(fill):
    raw_mel, edit_mel = log_mel_pair()
    before = (raw_mel.clone(), edit_mel.clone())
    raw_after, edit_after = freq_mask(raw_mel, edit_mel, num_masks=2, max_width=3, fill=fill, generator=generator(4))
    raw_fill = float(raw_mel.mean()) if fill == "mean" else 0.0
    edit_fill = float(edit_mel.mean()) if fill == "mean" else 0.0
    assert raw_after.shape == raw_mel.shape and edit_after.shape == edit_mel.shape
    bands = masked_rows(raw_after, raw_fill)
    assert 1 <= len(bands) <= 6 and bands == masked_rows(edit_after, edit_fill)
    assert torch.equal(raw_mel, before[0]) and torch.equal(edit_mel, before[1])


def test_time_mask_masks_the_same_spans_clipped_to_each_length():
    raw_mel, edit_mel = log_mel_pair(raw_frames=200, edit_frames=120)
    spans_seen = 0
    for seed in range(10):
        raw_after, edit_after = time_mask(raw_mel, edit_mel, num_masks=2, max_width=50, fill="zero", generator=generator(seed))
        raw_frames_masked = (raw_after == 0).all(dim=0)  # [T_raw]
        edit_frames_masked = (edit_after == 0).all(dim=0)  # [T_edit]
        assert torch.equal(raw_frames_masked[:120], edit_frames_masked)
        assert 1 <= int(raw_frames_masked.sum()) <= 2 * 20  # width <= 200 // 10
        spans_seen += int(edit_frames_masked.any())
    assert spans_seen > 0


def test_time_mask_skips_recordings_shorter_than_ten_frames():
    raw_mel, edit_mel = log_mel_pair(raw_frames=9, edit_frames=4)
    raw_after, edit_after = time_mask(raw_mel, edit_mel, num_masks=3, max_width=50, generator=generator())
    assert raw_after is raw_mel and edit_after is edit_mel


def test_channel_dropout_drops_the_same_bands_on_both():
    raw_mel, edit_mel = log_mel_pair(mel_bins=64)
    raw_after, edit_after = channel_dropout(raw_mel, edit_mel, dropout_rate=0.3, fill="mean", generator=generator(1))
    bands = masked_rows(raw_after, float(raw_mel.mean()))
    assert bands and bands == masked_rows(edit_after, float(edit_mel.mean()))
    kept = [row for row in range(64) if row not in bands]
    assert torch.equal(raw_after[kept], raw_mel[kept])


@pytest.mark.parametrize("same_on_both", [False, True])
def test_gain_is_an_additive_log_shift(same_on_both):
    raw_mel, edit_mel = log_mel_pair()
    raw_after, edit_after = apply_gain(
        raw_mel, edit_mel, scale_min=0.5, scale_max=2.0, same_on_both=same_on_both, generator=generator(2)
    )
    raw_shift, edit_shift = raw_after - raw_mel, edit_after - edit_mel
    for shift in (raw_shift, edit_shift):
        assert torch.allclose(shift, shift.flatten()[0].expand_as(shift))
        assert torch.log(torch.tensor(0.5)) <= shift.flatten()[0] <= torch.log(torch.tensor(2.0))
    assert (abs(float(raw_shift[0, 0]) - float(edit_shift[0, 0])) < 1e-6) == same_on_both


def test_noise_differs_on_raw_and_edit_unless_asked():
    raw_mel, _ = log_mel_pair()
    edit_mel = raw_mel.clone()
    different = add_noise(raw_mel, edit_mel, level_min=0.05, level_max=0.15, generator=generator(0))
    assert not torch.allclose(different.raw_mel - raw_mel, different.edit_mel - edit_mel)
    same = add_noise(raw_mel, edit_mel, level_min=0.05, level_max=0.15, same_on_both=True, generator=generator(0))
    assert torch.allclose(same.raw_mel - raw_mel, same.edit_mel - edit_mel)
    noise_std = float((different.raw_mel - raw_mel).std())
    assert 0.03 * float(raw_mel.std()) < noise_std < 0.2 * float(raw_mel.std())
    assert different.raw_mel.dtype == torch.float32


def test_noise_on_tensors_of_different_lengths_and_empty_edit():
    raw_mel, edit_mel = log_mel_pair(raw_frames=40, edit_frames=0)
    for same_on_both in (False, True):
        result = add_noise(raw_mel, edit_mel, level_min=0.1, level_max=0.1, same_on_both=same_on_both, generator=generator())
        assert result.raw_mel.shape == raw_mel.shape and result.edit_mel.shape == (8, 0)


# -------------------------------------------------------------------------- Augmentor


def everything_on(**noise) -> AugmentationConfig:
    """All seven augmentations enabled with probability 1; crop and shuffle small enough to act."""
    return AugmentationConfig.from_dict(
        {
            "noise": {"probability": 1.0, **noise},
            "gain": {"probability": 1.0},
            "channel_dropout": {"probability": 1.0},
            "spec_augment": {"probability": 1.0, "freq_width": 2, "time_width": 5},
            "crop": {"probability": 1.0, "min_len": 1, "max_len": 30, "context_pad": 3},
            "chunk_shuffle": {"probability": 1.0, "chunk_size": 7},
            "concatenation": {"enabled": True, "probability": 1.0},
        }
    )


@FAST
@given(sample=samples(), seed=st.integers(0, 2**32), index=st.integers(0, 10**6))
def test_augmentor_keeps_pointers_valid_with_everything_on(sample, seed, index):
    before = snapshot(sample)
    output = Augmentor(everything_on(), seed=seed)(sample, epoch=0, index=index)
    assert output.mel_bins == sample.mel_bins and output.raw_mel.dtype == torch.float32
    if output.edit_frames:
        assert int(output.pointers.max()) < output.raw_frames
        # The weights moved with the edit frames: a contiguous window of the original ones.
        start = int(output.weights[0])
        assert output.weights.tolist() == list(range(start, start + output.edit_frames))
    assert_untouched(sample, before)


@FAST
@given(sample=samples(), seed=st.integers(0, 2**32), index=st.integers(0, 10**6))
def test_augmentor_with_value_preserving_a_augmentations_keeps_frames_exactly(sample, seed, index):
    # Every augmentation runs, but A1-A4 are set to change nothing, so raw frames stay
    # comparable: the frame correspondence of the B augmentations through the whole chain.
    config = AugmentationConfig.from_dict(
        {
            **everything_on().to_dict(),
            "noise": {"probability": 1.0, "level_min": 0.0, "level_max": 0.0},
            "gain": {"probability": 1.0, "scale_min": 1.0, "scale_max": 1.0},
            "channel_dropout": {"probability": 1.0, "dropout_rate": 0.0},
            "spec_augment": {"probability": 1.0, "freq_masks": 0, "time_masks": 0},
        }
    )
    output = Augmentor(config, seed=seed)(sample, epoch=0, index=index)
    original = output.weights.long()  # [T_edit'] original edit frame of each output frame
    assert torch.equal(output.edit_mel, sample.edit_mel[:, original])
    assert_points_to(output.raw_mel, output.pointers, sample.raw_mel, sample.pointers[original])


def test_augmentor_is_a_function_of_seed_epoch_and_index():
    sample = make_sample(torch.randint(0, 80, (60,), generator=generator()).tolist(), raw_frames=80, mel_bins=8)
    augmentor = Augmentor(everything_on(), seed=7)
    first = [augmentor(sample, epoch=1, index=i) for i in range(3)]
    reversed_order = [augmentor(sample, epoch=1, index=i) for i in reversed(range(3))][::-1]
    again = Augmentor(everything_on(), seed=7)
    for one, other in zip(first, reversed_order):
        assert all(torch.equal(a, b) for a, b in zip(snapshot(one), snapshot(other)))
    assert torch.equal(again(sample, epoch=1, index=0).raw_mel, first[0].raw_mel)
    assert not torch.equal(Augmentor(everything_on(), seed=8)(sample, epoch=1, index=0).raw_mel, first[0].raw_mel)
    assert not torch.equal(augmentor(sample, epoch=2, index=0).raw_mel, first[0].raw_mel)
    assert not torch.equal(first[1].raw_mel, first[0].raw_mel)


def test_augmentor_leaves_samples_alone_when_disabled_or_warming_up():
    sample = make_sample([3, 1, 2], raw_frames=5)
    warming = AugmentationConfig.from_dict({**everything_on().to_dict(), "warmup_epochs": 2})
    assert Augmentor(warming, seed=0)(sample, epoch=1, index=0) is sample
    assert Augmentor(warming, seed=0)(sample, epoch=2, index=0) is not sample
    disabled = AugmentationConfig.from_dict({**everything_on().to_dict(), "enabled": False})
    assert Augmentor(disabled, seed=0)(sample, epoch=5, index=0) is sample


def test_augmentor_on_one_frame_and_on_no_edit_frames():
    augmentor = Augmentor(everything_on(), seed=0)
    for sample in (make_sample([0], raw_frames=1), make_sample([], raw_frames=12)):
        output = augmentor(sample, epoch=0, index=0)
        assert output.edit_frames == sample.edit_frames and output.mel_bins == sample.mel_bins
