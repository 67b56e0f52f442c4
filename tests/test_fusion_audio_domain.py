"""training/fusion_training.py in EnCodec's audio domain, with the GAN term on: one training
step decodes the outputs, scores them on audio, and trains the model and the MS-STFT
discriminator each with its own loss. Random-init EnCodec (no weights can be downloaded),
the tiny model of test_fusion_training.py, 1 s latents."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jingle.training import fusion_training
from jingle.models.cascade import build_fusion_model
from jingle.models.codecs import build_codec
from jingle.training.fusion_config import FusionTrainConfig
from jingle.training.fusion_training import FusionObjective, train_step
from jingle.training.adversarial import build_discriminator, hinge_discriminator_loss
from jingle.training.losses import correlation_cost, envelope
from jingle.training.optimization import build_optimizer
from tests.test_fusion_training import TINY_MODEL

SAMPLE_RATE = 24_000


@pytest.fixture(scope="module")
def encodec(encodec_checkpoint):
    return build_codec("encodec_24khz", checkpoint=encodec_checkpoint)


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    """Two pairs of unit-variance latents [2, 128, 75] (1 s at 75 frames/s), float16 as the
    shards keep them. Not encoded audio: a random EnCodec encodes audio to latents so small
    that they all decode to the decoder's biases (< 1e-5 apart), where input, target and
    output could not be told apart; these decode ~5e-3 apart."""
    generator = torch.Generator().manual_seed(0)
    return {name: torch.randn(2, 128, 75, generator=generator).half() for name in ("input_latent", "target_latent")}


def gan_config() -> FusionTrainConfig:
    return FusionTrainConfig.from_dict({
        "model": TINY_MODEL,
        "masking": {"strategy": "temporal", "temporal_segment": 15, "fade_frames": 4},
        "losses": {"gan_weight": 0.01, "discriminator_learning_rate": 1e-4},
        "training": {"learning_rate": 3e-3, "warmup_steps": 0, "schedule": "constant"},
    })


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: parameter.detach().clone() for name, parameter in module.named_parameters()}


def moved(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> list[str]:
    return [name for name, parameter in module.named_parameters() if not torch.equal(parameter, before[name])]


def test_a_gan_step_trains_the_model_and_the_discriminator_on_decoded_audio(encodec, batch, monkeypatch):
    config = gan_config()
    torch.manual_seed(0)
    model = build_fusion_model(config.model)
    objective = FusionObjective(codec=encodec, config=config, cascade=True)
    assert objective.domain == "audio" and objective.discriminator is not None
    discriminator = objective.discriminator
    # as pipelines/tasks/fusion.py builds it
    discriminator_optimizer = torch.optim.AdamW(discriminator.parameters(), lr=config.losses.discriminator_learning_rate)

    # what the fusion loss is given, what the discriminator's own loss is given, and the
    # discriminator's gradients when its optimiser steps
    seen: dict[str, list] = {"loss": [], "discriminator": [], "gradients": []}
    loss_forward, discriminator_loss, discriminator_step = objective.loss.forward, fusion_training.discriminator_loss, discriminator_optimizer.step

    def record_loss(output, input, target, **kwargs):
        seen["loss"].append((output.detach().clone(), input.clone(), target.clone()))
        return loss_forward(output, input, target, **kwargs)

    def record_discriminator_loss(discriminator, real, fake):
        seen["discriminator"].append((real.detach().clone(), fake.detach().clone()))
        return discriminator_loss(discriminator, real, fake)

    def record_step(*args, **kwargs):
        seen["gradients"].append({name: parameter.grad.clone() for name, parameter in discriminator.named_parameters()})
        return discriminator_step(*args, **kwargs)

    monkeypatch.setattr(objective.loss, "forward", record_loss)
    monkeypatch.setattr(fusion_training, "discriminator_loss", record_discriminator_loss)
    monkeypatch.setattr(discriminator_optimizer, "step", record_step)

    model_before = snapshot(model)
    # weight norm keeps deepcopy from copying the discriminator; a twin takes its weights
    discriminator_before = build_discriminator()
    discriminator_before.load_state_dict({name: value.clone() for name, value in discriminator.state_dict().items()})
    metrics = train_step(model, batch, objective, build_optimizer(model, config.training),
                         generator=torch.Generator().manual_seed(0), discriminator_optimizer=discriminator_optimizer)

    for name in ("gan", "discriminator", "spectral", "corr_cost", "total"):
        assert name in metrics and np.isfinite(metrics[name]), name
    # every stage of the model learnt something, and so did the discriminator
    changed = moved(model, model_before)
    for part in ("stage1.", "agent.", "stage2."):
        assert any(name.startswith(part) for name in changed), f"no parameter of {part} changed"
    assert len(moved(discriminator, snapshot(discriminator_before))) > len(list(discriminator.parameters())) // 2

    # the terms were computed on decoded audio: [B, 1, 75 frames x 320 samples], the
    # references being the decoded latents themselves
    ((output, input, target),) = seen["loss"]
    assert output.shape == input.shape == target.shape == (2, 1, 75 * encodec.hop_length)
    assert (input - target).abs().max() > 1e-3 and (output - target).abs().max() > 1e-3  # they can be told apart
    loss = objective.loss
    with torch.no_grad():
        torch.testing.assert_close(input, encodec.decode(batch["input_latent"].float()))
        assert metrics["spectral_input"] == pytest.approx(float(loss.spectral(output, input)), rel=1e-4)
        corr_cost = correlation_cost(envelope(input, loss.parts), envelope(target, loss.parts), envelope(output, loss.parts)).cost
        assert metrics["corr_cost"] == pytest.approx(float(corr_cost), rel=1e-4)

    # the discriminator judged the step's fakes against the decoded (shuffled) targets...
    ((real, fake),) = seen["discriminator"]
    torch.testing.assert_close(fake, output)
    torch.testing.assert_close(real, target)
    # ...and stepped on the gradient of its own hinge loss alone: none of the generator's
    # GAN term (which pushes D(fake) the other way) is left in it. (Whether that loss then
    # fell cannot be seen: a random discriminator scores this quiet audio by its biases, real
    # and fake logits ~1e-7 apart, so one step moves the hinge loss below float32's
    # resolution around 2.)
    (gradients,) = seen["gradients"]
    own_loss = hinge_discriminator_loss(discriminator_before(real)[0], discriminator_before(fake)[0])
    names, parameters = zip(*discriminator_before.named_parameters())
    expected = torch.cat([g.flatten() for g in torch.autograd.grad(own_loss, parameters)])
    stepped = torch.cat([gradients[name].flatten() for name in names])
    assert metrics["discriminator"] == pytest.approx(own_loss.item(), abs=1e-6)
    assert expected.norm() > 0
    assert (stepped - expected).norm() < 1e-3 * expected.norm(), float((stepped - expected).norm() / expected.norm())


def test_the_models_step_alone_leaves_the_discriminator_alone(encodec, batch):
    # The generator's GAN term puts gradients on the discriminator too; only the
    # discriminator's optimiser, with its own loss, may move it.
    config = gan_config()
    torch.manual_seed(0)
    model = build_fusion_model(config.model)
    objective = FusionObjective(codec=encodec, config=config, cascade=True)
    discriminator_before = snapshot(objective.discriminator)
    metrics = train_step(model, batch, objective, build_optimizer(model, config.training), generator=torch.Generator().manual_seed(0))
    assert "gan" in metrics and "discriminator" not in metrics
    assert any(parameter.grad is not None for parameter in objective.discriminator.parameters())  # it was reached
    assert moved(objective.discriminator, discriminator_before) == []
