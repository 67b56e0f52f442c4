"""core/config.py and the two training config trees: one schema, moved keys named, old
stored configs moved forward, ``latent_dim`` given once."""

from __future__ import annotations

import json

import pytest

from jingle.core.config import ConfigError, TrainingConfig, apply_overrides
from jingle.training.fusion_config import FusionTrainConfig
from jingle.training.pointer_config import PointerTrainConfig


def test_every_shipped_config_round_trips():
    for config_class, paths in ((FusionTrainConfig, ["configs/fusion.json", "configs/demo.json"]),
                                (PointerTrainConfig, ["configs/pointer/full.json", "configs/pointer/mini.json",
                                                      "configs/pointer/edit-mini.json", "configs/pointer/demo.json"])):
        for path in paths:
            config = config_class.from_file(path)
            assert config_class.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize(
    ("config_class", "document", "old", "new"),
    [
        (FusionTrainConfig, {"training": {"shuffle_targets": False}}, "training.shuffle_targets", "losses.shuffle_targets"),
        (FusionTrainConfig, {"training": {"discriminator_learning_rate": 1e-3}}, "training.discriminator_learning_rate",
         "losses.discriminator_learning_rate"),
        (FusionTrainConfig, {"model": {"compositional": {"latent_dim": 128}}}, "model.compositional.latent_dim", "model.latent_dim"),
        (PointerTrainConfig, {"model": {"stop_weight": 2.0}}, "model.stop_weight", "losses.stop_weight"),
        (PointerTrainConfig, {"model": {"label_smoothing_frames": 1}}, "model.label_smoothing_frames", "losses.label_smoothing_frames"),
    ],
)
def test_a_moved_key_in_a_config_file_names_its_new_place(tmp_path, config_class, document, old, new):
    path = tmp_path / "old.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigError, match=f"^config key {old} has moved to {new}: rename it in the config file$"):
        config_class.from_file(path)


def test_a_stored_config_of_the_earlier_layout_is_moved_forward():
    fusion = FusionTrainConfig.from_stored({
        "model": {"latent_dim": 128, "compositional": {"latent_dim": 128, "layers": 1}},
        "training": {"epochs": 2, "shuffle_targets": False, "discriminator_learning_rate": 3e-4},
    })
    assert fusion.losses.shuffle_targets is False and fusion.losses.discriminator_learning_rate == 3e-4
    assert fusion.training.epochs == 2 and fusion.model.compositional.layers == 1
    pointer = PointerTrainConfig.from_stored({"model": {"label_smoothing": 0.2, "stop_weight": 0.5}})
    assert (pointer.losses.label_smoothing, pointer.losses.stop_weight) == (0.2, 0.5)


def test_latent_dim_is_given_once_and_the_agents_take_it():
    config = FusionTrainConfig.from_dict({"model": {"latent_dim": 64}})
    assert config.model.compositional.latent_dim == 64 and config.model.adaptive_window.latent_dim == 64
    stored = config.to_dict()["model"]
    assert "latent_dim" not in stored["compositional"] and "latent_dim" not in stored["adaptive_window"]


def test_both_trees_share_one_training_section_without_model_only_keys():
    assert type(FusionTrainConfig().training) is type(PointerTrainConfig().training) is TrainingConfig
    keys = set(TrainingConfig().__dict__)
    assert not keys & {"shuffle_targets", "discriminator_learning_rate"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"epochs": 0}, "epochs must be ≥ 1, got 0"),
        ({"learning_rate": 0}, "learning_rate must be > 0, got 0"),
        ({"validation_fraction": 1.0}, "validation_fraction must be < 1, got 1.0"),
        ({"schedule": "step"}, "schedule must be one of \\['constant', 'cosine'\\], got 'step'"),
        ({"mixed_precision": "yes"}, "mixed_precision must be true or false, got 'yes'"),
        ({"fail_at_step": 0}, "fail_at_step must be ≥ 1, got 0"),
        ({"max_in_memory_mb": -1}, "max_in_memory_mb must be ≥ 0, got -1"),
    ],
)
def test_training_values_are_checked_with_one_line(values, message):
    with pytest.raises(ConfigError, match=f"^config section 'training': {message}$"):
        FusionTrainConfig.from_dict({"training": values})


def test_overrides_set_dotted_keys_and_refuse_unknown_sections():
    config = FusionTrainConfig().with_overrides({"losses.corr_weight": 0.3, "model.compositional.layers": 2})
    assert config.losses.corr_weight == 0.3 and config.model.compositional.layers == 2
    with pytest.raises(ConfigError, match="override 'optimizer.lr'"):
        apply_overrides(FusionTrainConfig().to_dict(), {"optimizer.lr": 1})


def test_the_full_fusion_config_spells_out_every_default():
    """configs/fusion.json is the reference users copy: every key, at its default."""
    with open("configs/fusion.json") as file:
        assert json.load(file) == FusionTrainConfig().to_dict()
