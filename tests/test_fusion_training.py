"""training/fusion_training.py without Ray: the step lowers the loss, masking and shuffling apply
only in training, evaluation is deterministic, and the configs validate."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from jingle.datasets.synth import chords, drums
from jingle.models.cascade import build_fusion_model
from jingle.models.codecs import build_codec
from jingle.core.config import ConfigError
from jingle.training.fusion_config import FusionTrainConfig
from jingle.training.fusion_training import FusionObjective, derangement, evaluate, train_step
from jingle.models.masking import apply_complementary_mask
from jingle.training.optimization import build_optimizer, build_scheduler

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


def test_evaluation_sees_whole_latents_and_single_stage_models_are_not_masked(mel_batch):
    codec, batch = mel_batch
    objective = FusionObjective(codec=codec, config=tiny_config(), cascade=True)
    clean = objective.prepare(batch, training=False, generator=None)
    assert torch.equal(clean.input, batch["input_latent"].float()) and torch.equal(clean.target, batch["target_latent"].float())
    assert FusionObjective(codec=codec, config=tiny_config(), cascade=False).masking is None


def test_masked_frames_hold_the_codec_silence_and_kept_frames_the_latent(mel_batch):
    codec, batch = mel_batch
    objective = FusionObjective(codec=codec, config=tiny_config(), cascade=True)
    masked = objective.prepare(batch, training=True, generator=torch.Generator().manual_seed(1))
    # The temporal mask does not depend on the data or the seed: rebuild the one prepare used.
    masks = apply_complementary_mask(masked.input_reference, masked.target_reference, objective.masking)
    # Zero is a loud bin in log-mel: masked frames must read the codec's silence (-11.5), not 0.
    silence = codec.silence_latent().float()[None, :, None].expand_as(masked.input)  # [B, D, T]
    for side, mask, reference in (("input", masks.input_mask, masked.input_reference),
                                  ("target", masks.target_mask, masked.target_reference)):
        prepared = getattr(masked, side)
        removed, kept = mask == 0, mask == 1  # fully masked / untouched frames, fades excluded
        assert removed.any() and kept.any(), side
        # float16 shards: the silence may come back rounded to float16
        torch.testing.assert_close(prepared[removed], silence[removed], atol=1e-2, rtol=1e-3, msg=side)
        assert torch.equal(prepared[kept], reference[kept]), side


def latent_batch(size: int, seed: int) -> dict[str, torch.Tensor]:
    """Random [B, 128, 30] latents: every row differs from every other."""
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(size, 128, 30, generator=generator) for name in ("input_latent", "target_latent")}


def source_rows(shuffled: torch.Tensor, original: torch.Tensor) -> list[int]:
    """For each row of ``shuffled``, the one row of ``original`` it equals."""
    rows = []
    for row in shuffled:
        matches = [index for index, candidate in enumerate(original) if torch.equal(row, candidate)]
        assert len(matches) == 1, matches
        rows.append(matches[0])
    return rows


@pytest.mark.parametrize("size", [2, 3, 4, 5])
def test_training_gives_every_input_another_examples_target(mel_batch, size):
    codec, _ = mel_batch
    config = tiny_config()
    assert config.losses.shuffle_targets  # the default
    objective = FusionObjective(codec=codec, config=config, cascade=True)
    for seed in range(25):
        batch = latent_batch(size, seed)
        prepared = objective.prepare(batch, training=True, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(prepared.input_reference, batch["input_latent"])  # inputs stay in place
        sources = source_rows(prepared.target_reference, batch["target_latent"])
        assert sorted(sources) == list(range(size)), sources  # a permutation: every target used once
        assert all(source != row for row, source in enumerate(sources)), f"seed {seed}: an input kept its own target: {sources}"


def test_targets_stay_in_place_without_shuffling_and_in_evaluation(mel_batch):
    codec, _ = mel_batch
    unshuffled = FusionTrainConfig.from_dict({**tiny_config().to_dict(), "losses": {"shuffle_targets": False}})
    batch = latent_batch(4, seed=0)
    for config, training in ((unshuffled, True), (tiny_config(), False)):
        objective = FusionObjective(codec=codec, config=config, cascade=True)
        for seed in range(5):
            prepared = objective.prepare(batch, training=training, generator=torch.Generator().manual_seed(seed))
            assert torch.equal(prepared.target_reference, batch["target_latent"]), (config.losses.shuffle_targets, training)
            assert torch.equal(prepared.input_reference, batch["input_latent"])


def test_with_the_teacher_rows_with_an_arrangement_keep_their_target_and_learn_from_it(mel_batch):
    codec, _ = mel_batch
    config = FusionTrainConfig.from_dict({**tiny_config().to_dict(), "losses": {"teacher_weight": 1.0}})
    objective = FusionObjective(codec=codec, config=config, cascade=True)
    for seed in range(10):
        batch = latent_batch(5, seed)
        batch["arrangement_latent"] = batch["target_latent"] + 1.0
        batch["has_arrangement"] = torch.tensor([True, False, True, False, False])
        prepared = objective.prepare(batch, training=True, generator=torch.Generator().manual_seed(seed))
        sources = source_rows(prepared.target_reference, batch["target_latent"])
        assert sources[0] == 0 and sources[2] == 2  # the arrangement is of this pair
        assert sorted(sources[i] for i in (1, 3, 4)) == [1, 3, 4] and all(sources[i] != i for i in (1, 3, 4))
        assert torch.equal(prepared.arrangement, batch["arrangement_latent"].float())
    model = build_fusion_model(config.model).eval()
    output = model(prepared.input, prepared.target)
    terms = objective(output, prepared).loss.terms
    assert "teacher" in terms and float(terms["teacher"]) > 0
    assert "teacher" not in objective(output).loss.terms  # no arrangement given, no term
    # without the teacher weight the arrangement is not read and every row is shuffled
    plain = FusionObjective(codec=codec, config=tiny_config(), cascade=True)
    prepared = plain.prepare(batch, training=True, generator=torch.Generator().manual_seed(0))
    assert prepared.arrangement is None
    assert all(source != row for row, source in enumerate(source_rows(prepared.target_reference, batch["target_latent"])))


def test_derangement_moves_every_index_and_reaches_every_derangement():
    for size in (2, 3, 4, 5, 8):
        generator = torch.Generator().manual_seed(size)
        for _ in range(50):
            order = derangement(size, generator)
            assert sorted(order.tolist()) == list(range(size))
            assert not bool((order == torch.arange(size)).any()), order
    generator = torch.Generator().manual_seed(0)
    assert {tuple(derangement(3, generator).tolist()) for _ in range(40)} == {(1, 2, 0), (2, 0, 1)}
    # 4 elements have 9 derangements; 900 draws give each ~100 (sd ~9.4) if they are uniform
    counts = Counter(tuple(derangement(4, generator).tolist()) for _ in range(900))
    assert len(counts) == 9 and all(60 < count < 140 for count in counts.values()), counts
    # the same seed draws the same order
    assert torch.equal(derangement(5, torch.Generator().manual_seed(3)), derangement(5, torch.Generator().manual_seed(3)))
    for size in (0, 1):
        with pytest.raises(ValueError, match=f"at least 2 elements, got {size}"):
            derangement(size, generator)


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


def test_the_arrangement_score_of_a_diverged_model_is_the_floor(mel_batch):
    """A model writing NaN gets the lowest score (a search can rank it), not a crashed validation."""
    from jingle.evaluation.arrangement import FIGURE_FLOOR
    from jingle.models.cascade import FusionOutput
    from jingle.training.fusion_training import ArrangementValidator

    codec, batch = mel_batch

    class Diverged(torch.nn.Module):
        def forward(self, input, target):
            return FusionOutput([torch.full_like(input, float("nan"))], [input], [target], [])

    scores = ArrangementValidator(codec, 2)(Diverged(), [batch])
    assert scores["score"] == pytest.approx(FIGURE_FLOOR)
    assert scores["score_plain_mix"] > FIGURE_FLOOR  # the sources themselves still score
