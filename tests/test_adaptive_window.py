"""Adaptive window agent (design note 001): windows, compression, tonality, gradients, size."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from jingle.models.adaptive_window import (
    AdaptiveWindowConfig,
    AdaptiveWindowCreativeAgent,
    AdaptiveWindowOutput,
    TemporalCompressor,
    TonalityReducer,
)
from jingle.models.blocks import parameter_count
from jingle.models.compositional import CompositionalConfig, CompositionalOutput

TINY_COMPOSITIONAL = CompositionalConfig(
    latent_dim=8,
    component_dim=4,
    model_dim=16,
    heads=2,
    layers=1,
    feedforward_dim=32,
    selector_hidden_dim=8,
    dropout=0.0,
)
TINY = AdaptiveWindowConfig(
    latent_dim=8,
    window_frames=20,
    num_pairs=3,
    pooled_steps=5,
    selector_hidden_dims=(16, 8),
    compositional=TINY_COMPOSITIONAL,
)
# The novelty hinge relu(cos - t) is active for any output at t = -1, so the real loss
# carries gradients at initialisation (at 0.7 a fresh model's loss is exactly zero).
ALWAYS_NOVEL = dataclasses.replace(TINY, compositional=dataclasses.replace(TINY_COMPOSITIONAL, novelty_threshold=-1.0))
BATCH = 2
SOURCE_FRAMES = 30  # = window_frames * max_ratio, the shortest source allowed


def latents(seed: int, config: AdaptiveWindowConfig = TINY, frames: int = SOURCE_FRAMES):
    generator = torch.Generator().manual_seed(seed)
    shape = (BATCH, config.latent_dim, frames)
    return torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)


def test_three_pairs_of_window_outputs():
    torch.manual_seed(0)
    agent = AdaptiveWindowCreativeAgent(TINY)
    input, target = latents(1)

    output = agent(input, target)

    assert isinstance(output, AdaptiveWindowOutput)
    expected = (BATCH, TINY.latent_dim, TINY.window_frames)
    for group in (output.latents, output.input_windows, output.target_windows):
        assert len(group) == 3 and all(tensor.shape == expected for tensor in group)
    assert all(isinstance(pair, CompositionalOutput) for pair in output.pair_outputs)
    assert output.pair_losses.shape == (3,)
    torch.testing.assert_close(output.loss, output.pair_losses.mean())
    for pair, pair_output in enumerate(output.pair_outputs):
        assert output.latents[pair] is pair_output.latent
        assert output.pair_losses[pair] == pair_output.novelty.loss


def test_source_lengths_may_differ_but_must_hold_the_longest_window():
    agent = AdaptiveWindowCreativeAgent(TINY)
    input, _ = latents(2, frames=44)
    _, target = latents(3, frames=SOURCE_FRAMES)
    assert agent(input, target).latents[0].shape == (BATCH, 8, 20)
    with pytest.raises(ValueError, match="input has 29 frames.*at least 30"):
        agent(input[..., :29], target)
    with pytest.raises(ValueError, match=r"target must be \[B, 8, T\]"):
        agent(input, target[:, :4])


def test_initial_windows_start_at_the_start_middle_and_end_with_ratio_one():
    agent = AdaptiveWindowCreativeAgent(TINY)
    input, target = latents(4)

    selection = agent(input, target).selection

    for ratio in (selection.ratio_input, selection.ratio_target):
        assert ratio.shape == (BATCH, 3)
        assert torch.all((ratio >= 1.0) & (ratio < 1.002))
    for start, ratio in ((selection.start_input, selection.ratio_input), (selection.start_target, selection.ratio_target)):
        fraction = start / (SOURCE_FRAMES - TINY.window_frames * ratio)  # [B, P]
        torch.testing.assert_close(fraction, torch.tensor([0.0, 0.5, 1.0]).expand(BATCH, 3), atol=3e-3, rtol=0)
    assert torch.all(selection.tonality_strength == 0.5)

    metadata = agent(input, target).metadata
    assert len(metadata["pairs"]) == 3
    middle = metadata["pairs"][1]
    assert set(middle) == {
        "start_input_mean", "start_target_mean", "ratio_input_mean", "ratio_target_mean", "tonality_strength_mean",
    }
    assert all(isinstance(value, float) for value in middle.values())
    assert middle["start_input_mean"] == pytest.approx((SOURCE_FRAMES - TINY.window_frames) / 2, abs=0.05)


@pytest.mark.parametrize("strength", [0.0, 0.37, 1.0])
def test_tonality_reducer_is_the_identity_at_initialisation(strength):
    torch.manual_seed(0)
    reducer = TonalityReducer(latent_dim=8)
    window = torch.randn(BATCH, 8, 20)
    assert torch.equal(reducer(window, torch.full((BATCH,), strength)), window)
    assert parameter_count(reducer) > 0


def test_gradients_reach_every_pair_the_starts_and_the_ratios():
    torch.manual_seed(0)
    agent = AdaptiveWindowCreativeAgent(ALWAYS_NOVEL)
    input, target = latents(5)

    output = agent(input, target)
    selection = output.selection
    for tensor in (*output.latents, *vars(selection).values()):
        tensor.retain_grad()
    output.loss.backward()

    for pair, latent in enumerate(output.latents):
        assert latent.grad is not None and latent.grad.abs().sum() > 0, f"pair {pair} gets no gradient"
    for name in ("start_input", "start_target", "ratio_input", "ratio_target"):
        grad = getattr(selection, name).grad
        assert grad is not None, name
        assert torch.all(grad.abs().sum(dim=0) > 0), f"{name} gradient is zero for some pair: {grad}"
    # Connected, but zero at the reducers' exact identity (see TonalityReducer).
    assert selection.tonality_strength.grad is not None
    assert agent.window_selector.head.weight.grad.abs().sum() > 0
    for reducer in (agent.input_reducer, agent.target_reducer):
        assert reducer.norm.weight.grad.abs().sum() > 0


def test_strengths_get_gradient_once_the_reducers_have_moved():
    torch.manual_seed(0)
    agent = AdaptiveWindowCreativeAgent(ALWAYS_NOVEL)
    reducer_parameters = [*agent.input_reducer.parameters(), *agent.target_reducer.parameters()]
    optimizer = torch.optim.SGD(reducer_parameters, lr=0.1)
    input, target = latents(6)

    agent(input, target).loss.backward()
    optimizer.step()
    agent.zero_grad()

    output = agent(input, target)
    output.selection.tonality_strength.retain_grad()
    output.loss.backward()
    grad = output.selection.tonality_strength.grad
    assert torch.all(grad.abs().sum(dim=0) > 0), f"strength gradient is zero for some pair: {grad}"


def test_compressor_at_an_integer_start_and_ratio_one_is_slicing():
    source = torch.randn(BATCH, 8, 30)
    start = torch.tensor([0.0, 7.0])
    window = TemporalCompressor()(source, start, torch.ones(BATCH), frames=20)
    torch.testing.assert_close(window[0], source[0, :, 0:20], atol=1e-5, rtol=0)
    torch.testing.assert_close(window[1], source[1, :, 7:27], atol=1e-5, rtol=0)


def test_compressor_ratio_compresses_a_ramp_and_passes_gradients():
    ramp = torch.arange(40, dtype=torch.float32).expand(BATCH, 3, 40)  # [B, D, T], value = frame
    start = torch.tensor([2.5, 4.25], requires_grad=True)
    ratio = torch.tensor([1.5, 1.25], requires_grad=True)

    window = TemporalCompressor()(ramp, start, ratio, frames=20)

    steps = torch.arange(20, dtype=torch.float32)
    expected = (start[:, None] + steps * ratio[:, None]).detach()  # [B, W]
    torch.testing.assert_close(window[:, 0], expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(window[:, 0].diff(dim=1).mean(dim=1), ratio.detach(), atol=1e-4, rtol=0)
    window.sum().backward()
    # d/dstart of sum_j (start + j r) over 3 channels is 3·W; d/dratio is 3·sum j.
    torch.testing.assert_close(start.grad, torch.full((BATCH,), 3.0 * 20), atol=1e-3, rtol=0)
    torch.testing.assert_close(ratio.grad, torch.full((BATCH,), 3.0 * steps.sum().item()), atol=1e-2, rtol=0)


def test_config_round_trips_through_json_and_rejects_bad_values():
    restored = AdaptiveWindowConfig.from_dict(json.loads(json.dumps(TINY.to_dict())))
    assert restored == TINY and isinstance(restored.compositional, CompositionalConfig)
    assert AdaptiveWindowConfig.from_dict(AdaptiveWindowConfig().to_dict()) == AdaptiveWindowConfig()
    assert TINY.min_source_frames == 30
    assert AdaptiveWindowConfig(window_frames=20, max_ratio=1.1).min_source_frames == 22

    with pytest.raises(ValueError, match="'windows'"):
        AdaptiveWindowConfig.from_dict({**TINY.to_dict(), "windows": 3})
    with pytest.raises(ValueError, match="'heds'"):
        AdaptiveWindowConfig.from_dict({**TINY.to_dict(), "compositional": {"heds": 2}})
    with pytest.raises(ValueError, match="0.9"):
        AdaptiveWindowConfig(max_ratio=0.9)
    with pytest.raises(ValueError, match=r"compositional.latent_dim \(128\) must equal latent_dim \(8\)"):
        AdaptiveWindowConfig(latent_dim=8)
    with pytest.raises(ValueError, match="1.0"):
        AdaptiveWindowConfig(initial_strength=1.0)


def linear(width_in: int, width_out: int) -> int:
    return width_in * width_out + width_out


def test_default_size_parameter_counts_and_shapes():
    """The notes' architecture at D=128, counted from the layer shapes; short windows for speed."""
    d = 128
    selector = linear(2 * d * 50, 512) + linear(512, 256) + linear(256, 5 * 3)
    reducer = (d * 7 + d) + linear(d, d) + 2 * d  # depthwise k7, pointwise 1x1, LayerNorm
    # Window length does not change any parameter, so a 16-frame window keeps the forward short.
    config = dataclasses.replace(AdaptiveWindowConfig(), window_frames=16)

    torch.manual_seed(0)
    agent = AdaptiveWindowCreativeAgent(config)

    assert parameter_count(agent.window_selector) == selector == 6_689_295  # the notes' "3.2M" does not fit their MLP
    assert parameter_count(agent.compressor) == 0
    assert parameter_count(agent.input_reducer) == parameter_count(agent.target_reducer) == reducer == 17_792
    compositional = parameter_count(agent.compositional_agent)
    assert compositional == 14_565_638
    assert parameter_count(agent) == selector + 2 * reducer + compositional == 21_290_517

    generator = torch.Generator().manual_seed(8)
    input, target = (torch.randn(BATCH, d, 24, generator=generator) for _ in range(2))
    with torch.no_grad():
        output = agent(input, target)
    assert [tuple(latent.shape) for latent in output.latents] == [(BATCH, d, 16)] * 3
