"""models/fusion_training.py without Ray: the step lowers the loss, masking and shuffling apply
only in training, evaluation is deterministic, and the configs validate."""

from __future__ import annotations

import json

import pytest
import torch

from datasets.synth import chords, drums
from models.cascade import build_fusion_model
from models.codecs import build_codec
from core.config import ConfigError
from models.fusion_config import FusionTrainConfig
from models.fusion_training import FusionObjective, evaluate, train_step
from models.optimization import build_optimizer, build_scheduler

TINY_MODEL = {
    "latent_dim": 128, "model_dim": 32, "heads": 4, "layers_per_stage": 1, "feedforward_dim": 64, "dropout": 0.0,
    "compositional": {"component_dim": 8, "model_dim": 32, "heads": 4, "layers": 1,
                      "feedforward_dim": 64, "selector_hidden_dim": 16, "dropout": 0.0},
    "adaptive_window": {"window_frames": 40, "selector_hidden_dims": [32, 16], "pooled_steps": 10},
}


def tiny_config(**training) -> FusionTrainConfig:
    return FusionTrainConfig.from_dict({
        "model": TINY_MODEL,
        "masking": {"strategy": "temporal", "temporal_segment": 15, "fade_frames": 4},
        "training": {"learning_rate": 3e-3, "warmup_steps": 0, "schedule": "constant", **training},
    })


@pytest.fixture(scope="module")
def mel_batch():
    import numpy as np

    codec = build_codec("mel")
    rng = np.random.default_rng(0)
    inputs = torch.stack([torch.from_numpy(drums(1.0, 24_000, rng)) for _ in range(2)])[:, None]
    targets = torch.stack([torch.from_numpy(chords(1.0, 24_000, rng)) for _ in range(2)])[:, None]
    return codec, {"input_latent": codec.encode(inputs).half(), "target_latent": codec.encode(targets).half()}


def test_loss_falls_over_a_short_run(mel_batch):
    codec, batch = mel_batch
    config = tiny_config()
    torch.manual_seed(0)
    model = build_fusion_model(config.model)
    objective = FusionObjective(codec=codec, config=config, cascade=True)
    optimizer = build_optimizer(model, config.training)
    generator = torch.Generator().manual_seed(0)
    before = evaluate(model, [batch], objective)["total"]
    losses = [train_step(model, batch, objective, optimizer, generator=generator, grad_clip=1.0)["total"] for _ in range(40)]
    after = evaluate(model, [batch], objective)["total"]
    assert after < 0.85 * before, (before, after)
    assert losses[-1] < losses[0]


def test_step_reports_every_term_and_the_component_weights(mel_batch):
    codec, batch = mel_batch
    config = tiny_config()
    model = build_fusion_model(config.model)
    objective = FusionObjective(codec=codec, config=config, cascade=True)
    metrics = train_step(model, batch, objective, build_optimizer(model, config.training), generator=torch.Generator().manual_seed(0))
    for name in ("total", "spectral", "spectral_input", "spectral_target", "rms_in", "rms_tgt", "novelty", "corr_cost",
                 "input_rhythm", "target_timbre", "grad_norm", "learning_rate"):
        assert name in metrics and torch.isfinite(torch.tensor(metrics[name])), name


def test_adaptive_window_step_reports_the_window_selection(mel_batch):
    codec, batch = mel_batch
    config = FusionTrainConfig.from_dict({**tiny_config().to_dict(), "model": {**TINY_MODEL, "agent": "adaptive_window"}})
    model = build_fusion_model(config.model)
    objective = FusionObjective(codec=codec, config=config, cascade=True)
    metrics = train_step(model, batch, objective, build_optimizer(model, config.training), generator=torch.Generator().manual_seed(0))
    assert {"pair0_start_input_mean", "pair2_ratio_target_mean", "pair1_tonality_strength_mean"} <= set(metrics)


def test_masking_and_shuffling_only_in_training(mel_batch):
    codec, batch = mel_batch
    objective = FusionObjective(codec=codec, config=tiny_config(), cascade=True)
    clean = objective.prepare(batch, training=False, generator=None)
    assert torch.equal(clean.input, batch["input_latent"].float()) and torch.equal(clean.target, batch["target_latent"].float())
    masked = objective.prepare(batch, training=True, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(masked.input, masked.input_reference)
    # masked-out frames hold the codec's silence, not zero (zero is loud in log-mel)
    assert masked.input.min() >= codec.silence_latent().min() - 1e-2  # float16 shards
    single_stage = FusionObjective(codec=codec, config=tiny_config(), cascade=False)
    assert single_stage.masking is None


def test_scheduler_warms_up_then_decays():
    config = tiny_config(warmup_steps=4, schedule="cosine")
    optimizer = build_optimizer(torch.nn.Linear(2, 2), config.training)
    scheduler = build_scheduler(optimizer, config.training, total_steps=20)
    rates = []
    for _ in range(20):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] < rates[3] == pytest.approx(3e-3) and rates[-1] < 0.1 * rates[3]


@pytest.mark.parametrize(
    "document, message",
    [
        ({"trainng": {}}, "unknown config section"),
        ({"training": {"epochs": 0}}, "section 'training': epochs must be ≥ 1"),
        ({"training": {"batchsize": 2}}, "unknown TrainingConfig key"),
        ({"losses": {"corr_weight": -1}}, "section 'losses'"),
        ({"masking": {"strategy": "zigzag"}}, "section 'masking'"),
        ({"model": {"agent": "magic"}}, "section 'model'"),
    ],
)
def test_config_errors_name_the_section_and_key(document, message):
    with pytest.raises(ConfigError, match=message):
        FusionTrainConfig.from_dict(document)


def test_config_files_and_overrides(tmp_path):
    path = tmp_path / "fusion.json"
    path.write_text(json.dumps({"training": {"epochs": 3}}))
    config = FusionTrainConfig.from_file(path)
    assert config.training.epochs == 3
    assert config.with_overrides({"losses.corr_weight": 0.3, "masking.strategy": "energy"}).losses.corr_weight == 0.3
    assert FusionTrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ConfigError, match="not valid JSON"):
        (tmp_path / "bad.json").write_text("{")
        FusionTrainConfig.from_file(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="does not exist"):
        FusionTrainConfig.from_file(tmp_path / "none.json")
