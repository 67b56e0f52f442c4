"""models/cascade.py: the fusion model's shapes, gradients, noise, configs and counts."""

from __future__ import annotations

import pytest
import torch

from jingle.models.cascade import CascadeConfig, build_fusion_model
from jingle.models.blocks import parameter_count
from jingle.models.compositional import COMPONENT_NAMES

TINY_COMPOSITIONAL = {"component_dim": 8, "model_dim": 32, "heads": 4, "layers": 1,
                      "feedforward_dim": 64, "selector_hidden_dim": 16, "dropout": 0.0}
TINY_WINDOW = {"window_frames": 20, "selector_hidden_dims": [32, 16], "pooled_steps": 10}


def tiny(agent: str = "compositional", **overrides) -> CascadeConfig:
    settings = {"compositional": TINY_COMPOSITIONAL, "adaptive_window": TINY_WINDOW, **overrides}
    return CascadeConfig(latent_dim=16, model_dim=32, heads=4, layers_per_stage=1, feedforward_dim=64, dropout=0.0,
                         agent=agent, num_stages=1 if agent == "none" else 2, **settings)


def stage_parameters(in_channels: int, out_channels: int, width: int, feedforward: int, layers: int) -> int:
    """Parameters of a transformer stage, from its layer shapes."""
    attention = 3 * width * width + 3 * width + width * width + width
    feedforward_net = width * feedforward + feedforward + feedforward * width + width
    norms = 2 * 2 * width
    return in_channels * width + width + layers * (attention + feedforward_net + norms) + width * out_channels + out_channels


@pytest.mark.parametrize("agent", ["compositional", "adaptive_window", "none"])
def test_parameter_counts_follow_the_architecture(agent):
    config = CascadeConfig(agent=agent, num_stages=1 if agent == "none" else 2)
    model = build_fusion_model(config)
    d, e, f, layers = 128, 512, 2048, 4
    if agent == "none":
        assert parameter_count(model) == stage_parameters(2 * d, d, e, f, layers)
        return
    stages = stage_parameters(d, d, e, f, layers) + stage_parameters(2 * d, d, e, f, layers)
    assert parameter_count(model.stage1) + parameter_count(model.stage2) == stages
    assert parameter_count(model) == stages + parameter_count(model.agent)
    if agent == "compositional":
        # "about 40M parameters with the agent"
        assert 39e6 < parameter_count(model) < 41e6


def test_compositional_cascade_shapes_and_gradients():
    model = build_fusion_model(tiny("compositional"))
    input, target = torch.randn(2, 16, 30), torch.randn(2, 16, 30)
    out = model(input, target)
    assert len(out.outputs) == 1 and out.outputs[0].shape == (2, 16, 30)
    assert out.input_references[0] is input and out.target_references[0] is target
    assert out.component_weights.shape == (2, 6)
    assert set(out.component_weights_by_name()) == set(COMPONENT_NAMES)
    (out.outputs[0].pow(2).mean() + out.novelty_mean.loss).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_adaptive_cascade_gives_one_output_per_pair_with_its_references():
    model = build_fusion_model(tiny("adaptive_window")).eval()
    input, target = torch.randn(2, 16, 40), torch.randn(2, 16, 40)
    out = model(input, target)
    assert [o.shape for o in out.outputs] == [(2, 16, 20)] * 3
    assert len(out.window_metadata["pairs"]) == 3
    # at initialisation pair 0 looks at the start with ratio ~1: its reference is ~the first
    # 20 frames (interpolated a hair off the integer grid: start sigmoid(-6), ratio 1.0012)
    def correlation(a, b):
        return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])

    assert correlation(out.input_references[0], input[:, :, :20]) > 0.98
    assert correlation(out.input_references[2], input[:, :, 20:40]) > 0.9
    sum(o.mean() for o in out.outputs).backward()
    assert model.agent.window_selector.head.weight.grad.abs().sum() > 0


def test_window_selection_gets_no_gradient_through_its_reference_windows():
    """The selector learns from what its windows make the output, not from picking
    references that are easy to differ from: a loss on the references alone (the output
    held fixed) gives it no gradient, while a loss on the outputs does."""
    model = build_fusion_model(tiny("adaptive_window"))
    input, target = torch.randn(2, 16, 40), torch.randn(2, 16, 40)
    out = model(input, target)
    assert all(not reference.requires_grad for reference in out.input_references + out.target_references)
    held = [output.detach() for output in out.outputs]
    references_only = sum(
        (h - i).pow(2).mean() + (h - t).pow(2).mean() for h, i, t in zip(held, out.input_references, out.target_references)
    )
    assert not references_only.requires_grad
    sum(output.pow(2).mean() for output in out.outputs).backward()
    assert model.agent.window_selector.head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("agent", ["compositional", "adaptive_window", "none"])
def test_the_configured_novelty_threshold_is_the_one_applied(agent):
    input, target = torch.randn(2, 16, 40), torch.randn(2, 16, 40)
    losses = {}
    for threshold in (-1.0, 0.7):
        compositional = {**TINY_COMPOSITIONAL, "novelty_threshold": threshold}
        torch.manual_seed(0)
        model = build_fusion_model(tiny(agent, compositional=compositional)).eval()
        out = model(input, target)
        similarity = out.novelty_mean.similarity_to_input + out.novelty_mean.similarity_to_target
        losses[threshold] = (out.novelty_mean.loss.item(), similarity.item())
    # at -1 everything is paid for: loss = sum of similarities + 2; at 0.7 an unrelated output is free
    loss, similarity = losses[-1.0]
    assert loss == pytest.approx(similarity + 2.0, abs=1e-4)
    assert losses[0.7][0] == 0.0


def test_single_stage_reads_input_and_target():
    model = build_fusion_model(tiny("none"))
    input, target = torch.randn(1, 16, 12), torch.randn(1, 16, 12)
    out = model(input, target)
    assert out.outputs[0].shape == (1, 16, 12) and model.agent is None and model.stage2 is None
    out.outputs[0].sum().backward()
    assert model.stage1.transformer.input_projection.weight.grad[:, 16:].abs().sum() > 0  # the target's half is used


def test_anti_cheating_noise_only_in_training_and_seeded():
    config = tiny("compositional", anti_cheating=0.5)
    model = build_fusion_model(config)
    input = torch.randn(2, 16, 30)
    model.eval()
    assert torch.equal(model._anti_cheating(input, None), input)
    model.train()
    first = model._anti_cheating(input, torch.Generator().manual_seed(1))
    again = model._anti_cheating(input, torch.Generator().manual_seed(1))
    assert torch.equal(first, again) and not torch.equal(first, input)
    noise_std = (first - input).std() / input.std()
    assert 0.4 < float(noise_std) < 0.6


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"num_stages": 3}, "num_stages must be 1 or 2"),
        ({"num_stages": 1, "agent": "compositional"}, "num_stages=1 needs agent=none"),
        ({"agent": "magic"}, "agent must be one of"),
        ({"anti_cheating": -1.0}, "anti_cheating must be non-negative"),
        ({"model_dim": 30, "heads": 4}, "divisible by heads"),
    ],
)
def test_bad_configs_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        CascadeConfig(**overrides)


def test_config_round_trips_through_json_and_refuses_unknown_keys():
    import json

    config = tiny("adaptive_window", anti_cheating=0.25)
    again = CascadeConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert again.adaptive_window.compositional == again.compositional
    with pytest.raises(ValueError, match="unknown CascadeConfig key"):
        CascadeConfig.from_dict({"layers": 3})


@pytest.mark.parametrize("agent", ["compositional", "none"])
def test_target_skip_adds_the_last_stage_to_the_target(agent):
    torch.manual_seed(0)
    input, target = torch.randn(2, 16, 30), torch.randn(2, 16, 30)
    skipping = build_fusion_model(tiny(agent, target_skip=True)).eval()
    plain = build_fusion_model(tiny(agent)).eval()
    plain.load_state_dict(skipping.state_dict())  # same parameters: the skip adds none
    last = skipping.stage2 if agent == "compositional" else skipping.stage1
    with torch.no_grad():
        difference = skipping(input, target).outputs[0] - plain(input, target).outputs[0]
        assert torch.allclose(difference, target, atol=1e-5)
        last.project_out.weight.zero_()
        last.project_out.bias.zero_()
        assert torch.equal(skipping(input, target).outputs[0], target)  # a silent last stage keeps the target


def test_target_skip_is_refused_with_the_adaptive_window_agent():
    with pytest.raises(ValueError, match="target_skip works with the compositional agent"):
        tiny("adaptive_window", target_skip=True)
    with pytest.raises(ValueError, match="target_skip must be true or false"):
        tiny(target_skip=1)
