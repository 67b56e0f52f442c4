"""models/masking.py and pipelines/masks.py: complementary masks, their strategies, the pictures."""

from __future__ import annotations

import json
import math
import re
import struct

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from jingle.models.masking import STRATEGIES, MaskingConfig, apply_complementary_mask, frame_energy

MASKING = [strategy for strategy in STRATEGIES if strategy != "none"]
FAST = settings(max_examples=40, deadline=None)


def latents(batch: int, channels: int, frames: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(batch, channels, frames, generator=torch.Generator().manual_seed(seed)).to(dtype)  # [B, D, T]


def masked(config: MaskingConfig, input: torch.Tensor, target: torch.Tensor | None = None, **options):
    options.setdefault("generator", torch.Generator().manual_seed(0))
    return apply_complementary_mask(input, input.flip(-1) if target is None else target, config, **options)


def reference_temporal(frames: int, segment: int, fade: int) -> list[float]:
    """The temporal input mask written the slow way, frame by frame, from the docstring."""
    values = [1.0 if (frame // segment) % 2 == 0 else 0.0 for frame in range(frames)]
    for boundary in range(segment, frames, segment):
        before = 1.0 if (boundary // segment - 1) % 2 == 0 else 0.0
        first = boundary - math.ceil(fade / 2)
        for k in range(fade):
            if 0 <= first + k < frames:
                values[first + k] = before + (1 - 2 * before) * (k + 0.5) / fade
    return values


# ------------------------------------------------------------------ complementarity


@FAST
@given(
    strategy=st.sampled_from(MASKING),
    batch=st.integers(1, 3),
    channels=st.integers(1, 12),
    frames=st.integers(1, 60),
    segment=st.integers(1, 16),
    fade_fraction=st.floats(0, 0.99),
    fraction=st.floats(0.01, 0.99),
    seed=st.integers(0, 2**16),
)
def test_masks_are_complementary_everywhere(strategy, batch, channels, frames, segment, fade_fraction, fraction, seed):
    config = MaskingConfig(
        strategy=strategy,
        temporal_segment=segment,
        fade_frames=int(fade_fraction * segment),  # any fade shorter than the segment
        freq_split=fraction,
        channel_keep=fraction,
        energy_threshold=fraction,
    )
    input, target = latents(batch, channels, frames, seed), latents(batch, channels, frames, seed + 1)
    pair = masked(config, input, target)
    assert pair.input_mask.shape == pair.target_mask.shape == (batch, channels, frames)
    assert torch.equal(pair.input_mask + pair.target_mask, torch.ones_like(input))
    assert pair.input_mask.min() >= 0 and pair.input_mask.max() <= 1
    assert torch.allclose(pair.input, input * pair.input_mask, atol=1e-6)
    assert torch.allclose(pair.target, target * pair.target_mask, atol=1e-6)
    # whole positions pass bit for bit, masked-out ones are exactly the fill (0)
    to_input, to_target = pair.input_mask == 1, pair.input_mask == 0
    assert torch.equal(pair.input[to_input], input[to_input]) and (pair.input[to_target] == 0).all()
    assert torch.equal(pair.target[to_target], target[to_target]) and (pair.target[to_input] == 0).all()
    assert "\n" not in pair.description and pair.description.startswith(f"{strategy}:")


@pytest.mark.parametrize("strategy", MASKING)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_masks_keep_the_latents_dtype_and_stay_complementary(strategy, dtype):
    input = latents(2, 8, 40, dtype=dtype)
    pair = masked(MaskingConfig(strategy=strategy, temporal_segment=10, fade_frames=7), input)
    for tensor in (pair.input, pair.target, pair.input_mask, pair.target_mask):
        assert tensor.dtype == dtype and tensor.device == input.device
    assert torch.equal(pair.input_mask + pair.target_mask, torch.ones_like(input))


def test_none_keeps_both_whole():
    input, target = latents(2, 4, 9), latents(2, 4, 9, seed=1)
    pair = apply_complementary_mask(input, target, MaskingConfig(strategy="none"))
    assert torch.equal(pair.input, input) and torch.equal(pair.target, target)
    assert torch.equal(pair.input_mask, torch.ones_like(input)) and torch.equal(pair.target_mask, torch.ones_like(input))
    assert pair.description.startswith("none: no masking")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("strategy", MASKING)
def test_masks_on_the_gpu_match_the_cpu(strategy):
    config = MaskingConfig(strategy=strategy, temporal_segment=10, fade_frames=4)
    input = latents(2, 8, 40)
    on_cpu = masked(config, input)
    on_gpu = masked(config, input.cuda().half())  # a CPU generator serves GPU latents
    assert on_gpu.input_mask.device.type == "cuda"
    assert torch.equal(on_gpu.input_mask + on_gpu.target_mask, torch.ones_like(on_gpu.input_mask))
    assert torch.equal(on_gpu.input_mask.float().cpu(), on_cpu.input_mask.half().float())


# ------------------------------------------------------------------------- temporal


def test_temporal_alternates_segments_with_crossing_fades():
    config = MaskingConfig(strategy="temporal", temporal_segment=50, fade_frames=4)
    pair = masked(config, latents(1, 3, 200))
    input_mask = pair.input_mask[0, 0]  # [T]
    assert torch.equal(pair.input_mask, input_mask.expand(1, 3, 200)), "the same over channels"
    # segments 1, 3 (frames 0-49, 100-149) to the input, 2, 4 to the target, away from fades
    assert (input_mask[0:48] == 1).all() and (input_mask[102:148] == 1).all()
    assert (input_mask[52:98] == 0).all() and (input_mask[152:200] == 0).all()
    # 4-frame fades, two frames either side of each boundary, crossing at one half
    assert input_mask[48:52].tolist() == [0.875, 0.625, 0.375, 0.125]
    assert input_mask[98:102].tolist() == [0.125, 0.375, 0.625, 0.875]
    assert input_mask[148:152].tolist() == [0.875, 0.625, 0.375, 0.125]
    assert pair.target_mask[0, 0, 48:52].tolist() == [0.125, 0.375, 0.625, 0.875]
    assert "input on segments 1,3,5" in pair.description and "4-frame cross-fades" in pair.description


def test_temporal_default_fade_reads_symmetric_about_the_boundary():
    pair = masked(MaskingConfig(strategy="temporal"), latents(1, 2, 160))  # 75-frame segments, 10-frame fades
    fade = pair.input_mask[0, 0, 70:80]
    assert torch.allclose(fade, torch.tensor([0.95, 0.85, 0.75, 0.65, 0.55, 0.45, 0.35, 0.25, 0.15, 0.05]))
    assert (pair.input_mask[0, 0, :70] == 1).all() and (pair.input_mask[0, 0, 80:145] == 0).all()


def test_temporal_without_fade_switches_on_the_boundary():
    pair = masked(MaskingConfig(strategy="temporal", temporal_segment=3, fade_frames=0), latents(1, 1, 10))
    assert pair.input_mask[0, 0].tolist() == [1, 1, 1, 0, 0, 0, 1, 1, 1, 0]


def test_temporal_clip_shorter_than_a_segment_goes_to_the_input():
    pair = masked(MaskingConfig(strategy="temporal", temporal_segment=75), latents(1, 2, 75))
    assert (pair.input_mask == 1).all()


@FAST
@given(frames=st.integers(1, 80), segment=st.integers(1, 20), fade_fraction=st.floats(0, 0.99))
def test_temporal_matches_the_frame_by_frame_reference(frames, segment, fade_fraction):
    fade = int(fade_fraction * segment)
    pair = masked(MaskingConfig(strategy="temporal", temporal_segment=segment, fade_frames=fade), latents(1, 1, frames))
    expected = torch.tensor(reference_temporal(frames, segment, fade))
    assert torch.allclose(pair.input_mask[0, 0], expected, atol=1e-6)


# ---------------------------------------------------------------- frequency, spectral


def test_frequency_splits_the_channels_at_freq_split():
    pair = masked(MaskingConfig(strategy="frequency", freq_split=0.3), latents(2, 128, 5))
    assert (pair.input_mask[:, :38] == 1).all() and (pair.input_mask[:, 38:] == 0).all()  # round(0.3 * 128) = 38
    assert "low 38 of 128" in pair.description


def test_split_leaves_a_channel_on_each_side():
    pair = masked(MaskingConfig(strategy="frequency", freq_split=0.01), latents(1, 8, 3))
    assert pair.input_mask[0, :, 0].tolist() == [1, 0, 0, 0, 0, 0, 0, 0]


@FAST
@given(batch=st.integers(1, 4), channels=st.integers(2, 40), keep=st.floats(0.05, 0.95), seed=st.integers(0, 2**16))
def test_spectral_keeps_the_fraction_of_channels_per_example(batch, channels, keep, seed):
    pair = masked(MaskingConfig(strategy="spectral", channel_keep=keep), latents(batch, channels, 4), generator=torch.Generator().manual_seed(seed))
    per_channel = pair.input_mask[:, :, 0]  # [B, D]
    assert torch.equal(pair.input_mask, per_channel[:, :, None].expand(-1, -1, 4)), "the same over frames"
    assert set(per_channel.unique().tolist()) <= {0.0, 1.0}
    expected = min(max(round(keep * channels), 1), channels - 1)
    assert per_channel.sum(dim=1).tolist() == [expected] * batch


def test_spectral_repeats_with_the_same_seed_and_differs_with_another():
    config, input = MaskingConfig(strategy="spectral"), latents(4, 128, 3)
    first = masked(config, input, generator=torch.Generator().manual_seed(7)).input_mask
    again = masked(config, input, generator=torch.Generator().manual_seed(7)).input_mask
    other = masked(config, input, generator=torch.Generator().manual_seed(8)).input_mask
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert not torch.equal(first[0], first[1]), "each example draws its own channels"
    assert (first.sum(dim=1)[:, 0] == 64).all()


# -------------------------------------------------------------------------- energy


def test_energy_gives_the_loudest_frames_to_the_input():
    input = 0.1 * latents(2, 6, 20)
    loud = [[3, 7, 11], [0, 19, 5]]
    for example, frames in enumerate(loud):
        input[example, :, frames] *= 50
    # 0.85 quantile of 20 frames lies between the 17th and 18th: the top three are above it
    pair = masked(MaskingConfig(strategy="energy", energy_threshold=0.85), input)
    for example, frames in enumerate(loud):
        expected = torch.zeros(20)
        expected[frames] = 1
        assert torch.equal(pair.input_mask[example], expected.expand(6, 20))


@FAST
@given(batch=st.integers(1, 3), frames=st.integers(2, 50), threshold=st.floats(0.05, 0.95), seed=st.integers(0, 2**16))
def test_energy_input_frames_are_louder_than_every_target_frame(batch, frames, threshold, seed):
    input = latents(batch, 5, frames, seed)
    pair = masked(MaskingConfig(strategy="energy", energy_threshold=threshold), input)
    energy = input.pow(2).mean(dim=1)  # [B, T]
    to_input = pair.input_mask[:, 0, :] == 1  # [B, T]
    for example in range(batch):
        if to_input[example].any() and (~to_input[example]).any():
            assert energy[example][to_input[example]].min() > energy[example][~to_input[example]].max()
        assert to_input[example].float().mean() <= 1 - threshold + 1 / frames


def test_energy_uses_the_energy_the_caller_passes():
    input = torch.ones(1, 4, 10)  # every frame equally loud by its latents
    energy = torch.zeros(1, 10)
    energy[0, [2, 5]] = 1.0
    pair = masked(MaskingConfig(strategy="energy", energy_threshold=0.7), input, energy=energy)
    assert pair.input_mask[0, 0].tolist() == [0, 0, 1, 0, 0, 1, 0, 0, 0, 0]
    with pytest.raises(ValueError, match=r"energy must be \[B, T\]"):
        masked(MaskingConfig(strategy="energy"), input, energy=torch.ones(1, 9))


def test_frame_energy_counts_frames_as_the_codecs_do():
    wav = torch.zeros(2, 1, 1000)
    wav[0, 0, 320:640] = 2.0
    energy = frame_energy(wav, 320)
    assert energy.shape == (2, 4)  # ceil(1000 / 320)
    assert energy[0].tolist() == [0.0, 4.0, 0.0, 0.0]


# -------------------------------------------------------------------------- hybrid


def test_hybrid_is_temporal_times_frequency():
    options = dict(temporal_segment=8, fade_frames=3, freq_split=0.4)
    input = latents(2, 10, 40)
    temporal = masked(MaskingConfig(strategy="temporal", **options), input).input_mask
    frequency = masked(MaskingConfig(strategy="frequency", **options), input).input_mask
    hybrid = masked(MaskingConfig(strategy="hybrid", **options), input)
    assert torch.equal(hybrid.input_mask, temporal * frequency)
    assert torch.equal(hybrid.target_mask, 1 - temporal * frequency)
    assert (hybrid.target_mask[:, 4:] == 1).all(), "the target keeps the high band everywhere"


def test_fill_value_takes_the_masked_out_positions():
    input = latents(1, 4, 6)
    pair = masked(MaskingConfig(strategy="frequency", freq_split=0.5), input, fill_value=-11.5)
    assert torch.equal(pair.input[:, :2], input[:, :2]) and (pair.input[:, 2:] == -11.5).all()


# ---------------------------------------------------------------------- the config


@pytest.mark.parametrize(
    "field, value",
    [
        ("strategy", "stripes"),
        ("temporal_segment", 0),
        ("temporal_segment", 7.5),
        ("fade_frames", -1),
        ("fade_frames", 75),
        ("freq_split", 0.0),
        ("freq_split", 1.2),
        ("channel_keep", 1.0),
        ("energy_threshold", -0.1),
        ("energy_threshold", True),
    ],
)
def test_config_errors_name_the_field_and_the_value(field, value):
    with pytest.raises(ValueError, match=f"{field}.*{re.escape(repr(value))}"):
        MaskingConfig(**{field: value})


def test_config_travels_as_json():
    config = MaskingConfig(strategy="hybrid", temporal_segment=150, fade_frames=20, freq_split=0.25)
    assert MaskingConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert MaskingConfig.from_dict({}) == MaskingConfig()


def test_from_dict_refuses_unknown_keys():
    with pytest.raises(ValueError, match="unknown masking config key 'mask_type'"):
        MaskingConfig.from_dict({"strategy": "temporal", "mask_type": "temporal"})


def test_for_frame_rate_counts_frames_from_seconds():
    assert MaskingConfig.for_frame_rate(75.0) == MaskingConfig()
    at_150 = MaskingConfig.for_frame_rate(150.0, strategy="energy", temporal_segment_seconds=0.5, fade_seconds=0.05)
    assert (at_150.strategy, at_150.temporal_segment, at_150.fade_frames) == ("energy", 75, 8)
    with pytest.raises(ValueError, match="frame_rate must be positive, got 0"):
        MaskingConfig.for_frame_rate(0)


def test_latents_are_checked():
    with pytest.raises(ValueError, match="same shape"):
        apply_complementary_mask(latents(1, 4, 5), latents(1, 4, 6), MaskingConfig())
    with pytest.raises(ValueError, match=r"\[B, D, T\]"):
        apply_complementary_mask(torch.ones(4, 5), torch.ones(4, 5), MaskingConfig())


# ------------------------------------------------------------------- jingle masks


def test_masks_command_writes_one_png_per_strategy(tmp_path, capsys):
    from jingle.pipelines import masks

    assert masks.main(["--out", str(tmp_path), "--seconds", "3"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == len(STRATEGIES)
    for strategy in STRATEGIES:
        data = (tmp_path / f"mask_{strategy}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
        assert (width, height) == (1040, 600) and len(data) > 20_000
        assert any(line.startswith(f"wrote {tmp_path / f'mask_{strategy}.png'}: {strategy}:") for line in printed)


def test_masks_command_refuses_a_bad_length(tmp_path, capsys):
    from jingle.pipelines import masks

    assert masks.main(["--out", str(tmp_path), "--seconds", "0"]) == 2
    assert "--seconds must be positive" in capsys.readouterr().err
