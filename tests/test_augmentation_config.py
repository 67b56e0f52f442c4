"""The augmentation config section (datasets/augmentation_config.py): the plan's example,
defaults, round trips, and one-line errors naming the key."""

from __future__ import annotations

import json

import pytest

from jingle.core.config import ConfigError
from jingle.datasets.augmentation_config import AugmentationConfig, CropConfig, NoiseConfig

PLAN_EXAMPLE = """
{
    "augmentation": {
        "enabled": true,
        "noise": {
            "enabled": true,
            "probability": 0.5,
            "level_min": 0.05,
            "level_max": 0.15
        },
        "gain": {
            "enabled": true,
            "probability": 0.5,
            "scale_min": 0.7,
            "scale_max": 1.3
        },
        "channel_dropout": {
            "enabled": true,
            "probability": 0.3,
            "dropout_rate": 0.1
        },
        "spec_augment": {
            "enabled": true,
            "probability": 0.5,
            "freq_masks": 2,
            "freq_width": 20,
            "time_masks": 2,
            "time_width": 50
        },
        "crop": {
            "enabled": true,
            "probability": 0.5,
            "min_len": 500,
            "max_len": 5000
        },
        "chunk_shuffle": {
            "enabled": true,
            "probability": 0.3,
            "chunk_size": 1000
        },
        "concatenation": {
            "enabled": false,
            "probability": 0.2
        }
    }
}
"""


def test_the_plan_example_loads_with_the_defaults(tmp_path):
    config = AugmentationConfig.from_dict(json.loads(PLAN_EXAMPLE))
    assert config == AugmentationConfig()
    assert AugmentationConfig.from_dict(json.loads(PLAN_EXAMPLE)["augmentation"]) == config
    path = tmp_path / "augmentation.json"
    path.write_text(PLAN_EXAMPLE)
    assert AugmentationConfig.from_file(path) == config
    assert AugmentationConfig.from_dict(config.to_dict()) == config
    assert config.crop == CropConfig(min_len=500, max_len=5000, context_pad=100)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"warmup": 1}, "augmentation: unknown AugmentationConfig key(s) ['warmup']; known keys are ["),
        ({"crop": {"min_length": 3}}, "augmentation.crop: unknown CropConfig key(s) ['min_length']; known keys are ["),
        ({"augmentation": {"noise": {"levels": 1, "level": 2}}}, "augmentation.noise: unknown NoiseConfig key(s) ['level', 'levels']"),
        ({"noise": {"level_min": 0.2, "level_max": 0.15}}, "augmentation.noise.level_max must be ≥ level_min (0.15 < 0.2)"),
        ({"gain": {"probability": 1.5}}, "augmentation.gain.probability must be ≤ 1, got 1.5"),
        ({"gain": {"scale_min": 0}}, "augmentation.gain.scale_min must be > 0, got 0"),
        ({"channel_dropout": {"fill": "min"}}, "augmentation.channel_dropout.fill must be one of"),
        ({"spec_augment": {"time_width": -1}}, "augmentation.spec_augment.time_width must be ≥ 0"),
        ({"spec_augment": {"freq_masks": 1.5}}, "augmentation.spec_augment.freq_masks must be an integer"),
        ({"crop": {"min_len": 600, "max_len": 500}}, "augmentation.crop.max_len must be ≥ min_len"),
        ({"chunk_shuffle": {"chunk_size": 0}}, "augmentation.chunk_shuffle.chunk_size must be ≥ 1"),
        ({"concatenation": {"pairing": "genre"}}, "augmentation.concatenation.pairing must be one of"),
        ({"concatenation": {"probability": -0.1}}, "augmentation.concatenation.probability must be ≥ 0, got -0.1"),
        ({"warmup_epochs": -1}, "augmentation.warmup_epochs must be ≥ 0"),
        ({"enabled": "yes"}, "augmentation.enabled must be true or false"),
        ({"noise": [1]}, "augmentation.noise: NoiseConfig must be a JSON object"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(values, message):
    with pytest.raises(ConfigError) as error:
        AugmentationConfig.from_dict(values)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_config_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        AugmentationConfig.from_file(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        AugmentationConfig.from_file(broken)


def test_sections_may_be_given_as_dicts_and_list_their_options():
    config = AugmentationConfig(noise={"level_max": 0.2})
    assert config.noise == NoiseConfig(level_max=0.2)
    assert config.noise.options() == {"level_min": 0.05, "level_max": 0.2, "same_on_both": False}
