"""Compositional creative agent (design note 004): shapes, weights, gradients, size."""

from __future__ import annotations

import json
import math

import pytest
import torch

from jingle.models.blocks import parameter_count, sinusoidal_positions
from jingle.models.compositional import COMPONENT_NAMES, CompositionalConfig, CompositionalCreativeAgent, CompositionalOutput, MultiScaleExtractor

TINY = CompositionalConfig(
    latent_dim=16,
    component_dim=8,
    model_dim=32,
    heads=4,
    layers=1,
    feedforward_dim=64,
    selector_hidden_dim=16,
    dropout=0.0,
)
BATCH, FRAMES = 2, 40


def latents(seed: int, config: CompositionalConfig = TINY, frames: int = FRAMES) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shape = (BATCH, config.latent_dim, frames)
    return torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)


def test_output_shapes_weights_and_novelty_terms():
    torch.manual_seed(0)
    agent = CompositionalCreativeAgent(TINY)
    input, target = latents(1)

    output = agent(input, target)

    assert isinstance(output, CompositionalOutput)
    assert output.latent.shape == (BATCH, TINY.latent_dim, FRAMES)
    assert output.component_weights.shape == (BATCH, len(COMPONENT_NAMES))
    assert ((output.component_weights > 0) & (output.component_weights < 1)).all()
    for term in (output.novelty.loss, output.novelty.similarity_to_input, output.novelty.similarity_to_target):
        assert term.dim() == 0 and torch.isfinite(term)
    named = output.component_weights_by_name()
    assert list(named) == list(COMPONENT_NAMES)
    assert all(isinstance(value, float) and 0 < value < 1 for value in named.values())
    assert named["input_rhythm"] == pytest.approx(output.component_weights[:, 0].mean().item())


def test_extractor_keeps_the_frame_count():
    extractor = MultiScaleExtractor(latent_dim=16, component_dim=8)
    components = extractor(torch.randn(BATCH, 16, 17))
    for component in components.as_tuple():
        assert component.shape == (BATCH, 8, 17)


def test_gradients_reach_both_extractors_selector_and_composer():
    torch.manual_seed(0)
    # A threshold of -1 makes the novelty hinge active for any output, so the real loss
    # (not a surrogate) carries the gradient.
    agent = CompositionalCreativeAgent(CompositionalConfig(**{**TINY.to_dict(), "novelty_threshold": -1.0}))
    input, target = latents(2)

    output = agent(input, target)
    assert output.novelty.loss > 0
    output.novelty.loss.backward()

    for name in ("input_extractor", "target_extractor", "selector", "composer"):
        module = getattr(agent, name)
        for parameter_name, parameter in module.named_parameters():
            assert parameter.grad is not None, f"{name}.{parameter_name} has no gradient"
        assert any(parameter.grad.abs().sum() > 0 for parameter in module.parameters()), f"{name} gets zero gradient"


def test_selector_weights_scale_the_components():
    """A component whose weight is forced to zero no longer influences the output."""
    torch.manual_seed(0)
    agent = CompositionalCreativeAgent(TINY).eval()
    input, target = latents(3)
    timbre_index = COMPONENT_NAMES.index("target_timbre")
    with torch.no_grad():
        # Cut the component out of the selector's own input too, so only the weighting remains.
        agent.selector.mlp[0].weight[:, timbre_index * TINY.component_dim : (timbre_index + 1) * TINY.component_dim] = 0.0
        head = agent.selector.mlp[-1]
        head.weight[timbre_index] = 0.0
        head.bias[timbre_index] = -1e4  # sigmoid -> 0
        reference = agent(input, target).latent
        for parameter in agent.target_extractor.timbre.parameters():
            parameter.add_(1.0)
        changed = agent(input, target).latent
    torch.testing.assert_close(changed, reference)


def test_positional_encoding_needs_no_maximum_and_has_no_parameters():
    encoding = sinusoidal_positions(5000, 32, device=torch.device("cpu"), dtype=torch.float32)
    assert encoding.shape == (5000, 32)
    assert encoding[0, 0] == 0 and encoding[0, 1] == 1


def test_input_shapes_are_checked():
    agent = CompositionalCreativeAgent(TINY)
    input, target = latents(4)
    with pytest.raises(ValueError, match=r"\[B, 16, T\]"):
        agent(input[:, :8], target[:, :8])
    with pytest.raises(ValueError, match="target must have"):
        agent(input, target[..., :-1])


def test_config_round_trips_and_rejects_bad_values():
    assert CompositionalConfig.from_dict(json.loads(json.dumps(TINY.to_dict()))) == TINY
    with pytest.raises(ValueError, match="'colour'"):
        CompositionalConfig.from_dict({**TINY.to_dict(), "colour": 1})
    with pytest.raises(ValueError, match="-3"):
        CompositionalConfig(layers=-3)
    with pytest.raises(ValueError, match="divisible"):
        CompositionalConfig(model_dim=100, heads=8)
    with pytest.raises(ValueError, match="1.5"):
        CompositionalConfig(dropout=1.5)


def test_a_checkpoint_rebuilds_from_its_config_dict():
    torch.manual_seed(0)
    agent = CompositionalCreativeAgent(TINY).eval()
    checkpoint = {"config": agent.config.to_dict(), "state": agent.state_dict()}
    rebuilt = CompositionalCreativeAgent(CompositionalConfig.from_dict(checkpoint["config"])).eval()
    rebuilt.load_state_dict(checkpoint["state"])
    input, target = latents(5)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(input, target).latent, agent(input, target).latent)


def conv(channels_in: int, channels_out: int, kernel: int) -> int:
    return channels_in * channels_out * kernel + channels_out


def linear(width_in: int, width_out: int) -> int:
    return width_in * width_out + width_out


def test_default_size_parameter_counts_and_shapes():
    """The notes' architecture at D=128: counted from the layer shapes, not from the code."""
    config = CompositionalConfig()
    d, c, e, ff = 128, 64, 512, 2048
    branch = {k: conv(d, d, k1) + conv(d, c, k2) + 2 * c for k, (k1, k2) in
              {"rhythm": (3, 5), "harmony": (7, 9), "timbre": (15, 21)}.items()}
    extractor = sum(branch.values())
    selector = linear(6 * c, 512) + linear(512, 6)
    encoder_layer = linear(e, 3 * e) + linear(e, e) + linear(e, ff) + linear(ff, e) + 2 * 2 * e
    composer = linear(6 * c, e) + 4 * encoder_layer + linear(e, e // 2) + linear(e // 2, d)

    torch.manual_seed(0)
    agent = CompositionalCreativeAgent(config)

    assert parameter_count(agent.input_extractor) == parameter_count(agent.target_extractor) == extractor == 697_280
    assert parameter_count(agent.selector) == selector
    assert parameter_count(agent.composer) == composer
    total = parameter_count(agent)
    assert total == 2 * extractor + selector + composer == 14_565_638
    assert math.isclose(total, 14.6e6, rel_tol=0.01)  # the notes' "~14.6M"

    input, target = latents(6, config, frames=12)
    with torch.no_grad():
        output = agent(input, target)
    assert output.latent.shape == (BATCH, 128, 12)
    assert output.component_weights.shape == (BATCH, 6)
