"""pipelines/tune_space.py and tune_spaces/: YAML overlays on the training configs, sampled
define-by-run through Optuna (and Ray's OptunaSearch), refused up front when wrong."""

from __future__ import annotations

import json
import pickle
from functools import cache
from pathlib import Path

import optuna
import pytest
import yaml

from jingle.core.config import ConfigError
from jingle.training.fusion_config import FusionTrainConfig
from jingle.training.pointer_config import PointerTrainConfig
from jingle.pipelines.tune_space import SearchSpace, make_searcher

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = {  # space file -> (config class, base config file)
    "fusion_loss_weights.yaml": (FusionTrainConfig, "configs/fusion.json"),
    "fusion_masking.yaml": (FusionTrainConfig, "configs/fusion.json"),
    "pointer.yaml": (PointerTrainConfig, "configs/pointer/mini.json"),
}
# What models/masking.py says each strategy reads (hybrid: temporal x frequency).
MASKING_KEYS = {
    "none": set(),
    "temporal": {"masking.temporal_segment", "masking.fade_frames"},
    "frequency": {"masking.freq_split"},
    "spectral": {"masking.channel_keep"},
    "energy": {"masking.energy_threshold"},
    "hybrid": {"masking.temporal_segment", "masking.fade_frames", "masking.freq_split"},
}

optuna.logging.set_verbosity(optuna.logging.WARNING)


@cache
def base_config(config_file: str):
    config_class = PointerTrainConfig if "pointer" in config_file else FusionTrainConfig
    return config_class.from_file(ROOT / config_file)


@cache
def shipped_space(name: str) -> SearchSpace:
    config_class, config_file = SHIPPED[name]
    return SearchSpace.from_file(ROOT / "tune_spaces" / name, config_class, base_config(config_file))


def lookup(tree: dict, dotted: str):
    for name in dotted.split("."):
        tree = tree[name]
    return tree


def inside(spec: dict, value) -> bool:
    """The range a raw YAML entry states, checked apart from the module's own code."""
    if "choice" in spec:
        return value in spec["choice"]
    if "randint" in spec:
        low, high = spec["randint"]
        return isinstance(value, int) and low <= value < high  # high excluded, as Ray's randint
    if "quniform" in spec:
        low, high, step = spec["quniform"]
        steps = (value - low) / step
        return isinstance(value, float) and low <= value <= high and abs(steps - round(steps)) < 1e-9 and value == round(value, 10)
    low, high = spec.get("uniform") or spec["loguniform"]
    return isinstance(value, float) and low <= value <= high


def draws(space: SearchSpace, count: int, seed: int) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [space.suggest(study.ask()) for _ in range(count)]


# ------------------------------------------------------------------ shipped spaces


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_a_shipped_space_samples_configs_the_config_accepts(name):
    space = shipped_space(name)
    raw = yaml.safe_load((ROOT / "tune_spaces" / name).read_text())["parameters"]
    assert space.keys == tuple(raw)
    for overrides in draws(space, 50, seed=0):
        for key, value in overrides.items():
            assert inside(raw[key], value), (key, value)
            when = raw[key].get("when", {})
            assert all(overrides.get(other) in (allowed if isinstance(allowed, list) else [allowed])
                       for other, allowed in when.items()), (key, overrides)
        for key, spec in raw.items():  # a key is missing only when its condition fails
            if key not in overrides:
                assert "when" in spec, key
        values = space.config(overrides).to_dict()  # the config's own validators accept it
        for key, value in overrides.items():
            assert lookup(values, key) == value


def test_the_masking_space_samples_each_strategys_own_parameters_only():
    seen = set()
    for overrides in draws(shipped_space("fusion_masking.yaml"), 50, seed=0):
        strategy = overrides["masking.strategy"]
        seen.add(strategy)
        assert set(overrides) - {"masking.strategy"} == MASKING_KEYS[strategy]
    assert seen == set(MASKING_KEYS)


def test_the_same_seed_gives_the_same_sequence():
    space = shipped_space("fusion_masking.yaml")
    assert draws(space, 20, seed=3) == draws(space, 20, seed=3) == space.sample(20, seed=3)
    assert draws(space, 20, seed=3) != draws(space, 20, seed=4)


def test_overrides_take_the_spaces_active_keys_from_a_trials_config():
    space = shipped_space("fusion_masking.yaml")
    trial_config = {"masking.strategy": "frequency", "masking.freq_split": 0.30000000000000004,
                    "masking.temporal_segment": 50, "driver.constant": 1}
    assert space.overrides(trial_config) == {"masking.strategy": "frequency", "masking.freq_split": 0.3}
    with pytest.raises(KeyError, match="masking.freq_split"):
        space.overrides({"masking.strategy": "frequency"})


def test_a_space_pickles_for_a_restored_tune():
    space = shipped_space("pointer.yaml")
    again = pickle.loads(pickle.dumps(space))
    assert again == space and draws(again, 3, seed=1) == draws(space, 3, seed=1)


def test_describe_names_every_parameter_and_randints_excluded_high():
    text = shipped_space("fusion_masking.yaml").describe()
    assert "masking.temporal_segment  randint 25..225 (high 226 excluded)  when masking.strategy in [temporal, hybrid]" in text
    assert len(text.splitlines()) == 1 + len(shipped_space("fusion_masking.yaml").parameters)


def test_optuna_search_suggests_the_spaces_flat_overrides():
    space = shipped_space("fusion_masking.yaml")
    searcher = make_searcher(space, search="random", seed=0, metric="val_score", mode="max")
    suggestions = [searcher.suggest(f"trial_{index}") for index in range(3)]
    assert suggestions == space.sample(3, seed=0)  # flat dotted keys, the same seeded draws
    searcher.on_trial_complete("trial_0", {"val_score": 0.5})
    tpe = make_searcher(space, search="optuna", seed=0, metric="val_score", mode="max")
    assert space.base_config.with_overrides(tpe.suggest("trial_0"))
    with pytest.raises(ConfigError, match="--search must be one of"):
        make_searcher(space, search="grid", metric="val_score", mode="max")


# ------------------------------------------------------------------ accepted forms


def test_json_nested_keys_chained_conditions_and_1e_minus_4(tmp_path):
    document = {"parameters": {
        "model.agent": {"choice": ["compositional", "adaptive_window"]},
        "model.compositional.novelty_threshold": {"uniform": [0.5, 0.9], "when": {"model.agent": "compositional"}},
        "masking.strategy": {"choice": ["none", "temporal"], "when": {"model.agent": "compositional"}},
        "masking.temporal_segment": {"randint": [30, 31], "when": {"masking.strategy": "temporal"}},
    }}
    path = tmp_path / "space.json"
    path.write_text(json.dumps(document))
    space = SearchSpace.from_file(path, FusionTrainConfig)
    for overrides in draws(space, 30, seed=0):
        if overrides["model.agent"] != "compositional":
            assert set(overrides) == {"model.agent"}  # the chain: no strategy, so no segment
        elif overrides["masking.strategy"] == "temporal":
            assert overrides["masking.temporal_segment"] == 30
    path = tmp_path / "space.yaml"
    path.write_text("parameters:\n  training.learning_rate: {loguniform: [1e-4, 1e-3]}\n")
    assert SearchSpace.from_file(path, FusionTrainConfig).parameters[0].arguments == (1e-4, 1e-3)


# ------------------------------------------------------------------ refused files

BAD = [
    # (file text, words the one-line error must hold)
    ("parameters: [unclosed", "is not valid YAML (line"),
    ("", "is empty"),
    ("parameters: {}", "has no parameters"),
    ("parameter:\n  losses.corr_weight: {uniform: [0.1, 1.0]}", "unknown top-level key(s) ['parameter']"),
    ("parameters:\n  losses.corr_weight: {uniform: [0.1, 1.0]}\n  losses.corr_weight: {uniform: [0.1, 2.0]}",
     "losses.corr_weight is given twice"),
    ("parameters:\n  losses.corr_wieght: {uniform: [0.1, 1.0]}", "losses.corr_wieght: is not a key of FusionTrainConfig; did you mean losses.corr_weight?"),
    ("parameters:\n  model.compositional.novelty: {uniform: [0.1, 0.9]}", "model.compositional.novelty: is not a key"),
    ("parameters:\n  model.compositional: {uniform: [0.1, 1.0]}", "model.compositional: is a section of FusionTrainConfig, not a value"),
    ("parameters:\n  training.shuffle_targets: {choice: [true, false]}", "training.shuffle_targets: has moved to losses.shuffle_targets"),
    ("parameters:\n  losses.corr_weight: 0.3", "losses.corr_weight: must be a mapping such as {uniform: [low, high]}"),
    ("parameters:\n  losses.corr_weight: {normal: [0.1, 1.0]}", "losses.corr_weight: unknown distribution 'normal'"),
    ("parameters:\n  losses.corr_weight: {uniform: [0.1, 1.0], loguniform: [0.1, 1.0]}", "losses.corr_weight: needs exactly one distribution"),
    ("parameters:\n  losses.corr_weight: {uniform: [0.1]}", "losses.corr_weight: uniform needs [low, high], got [0.1]"),
    ("parameters:\n  masking.freq_split: {quniform: [0.1, 0.5]}", "masking.freq_split: quniform needs [low, high, q]"),
    ("parameters:\n  losses.corr_weight: {uniform: [1.0, 0.1]}", "losses.corr_weight: uniform needs low < high"),
    ("parameters:\n  losses.corr_weight: {uniform: [low, 1.0]}", "losses.corr_weight: uniform needs finite numbers"),
    ("parameters:\n  losses.corr_weight: {loguniform: [0.0, 1.0]}", "losses.corr_weight: loguniform needs 0 < low"),
    ("parameters:\n  masking.freq_split: {quniform: [0.1, 0.62, 0.05]}", "masking.freq_split: quniform's high - low (0.52) must be a whole number of steps"),
    ("parameters:\n  masking.fade_frames: {randint: [0, 10.5]}", "masking.fade_frames: randint needs whole numbers"),
    ("parameters:\n  masking.fade_frames: {randint: [5, 5]}", "masking.fade_frames: randint needs low < high, got [5, 5] (high is excluded"),
    ("parameters:\n  masking.strategy: {choice: []}", "masking.strategy: choice needs a non-empty list"),
    ("parameters:\n  masking.strategy: {choice: [none, none]}", "masking.strategy: choice lists 'none' twice"),
    ("parameters:\n  model.adaptive_window.selector_hidden_dims: {choice: [[512], [256]]}", "choice values must be numbers, strings"),
    ("parameters:\n  masking.fade_frames: {randint: [0, 5], when: {masking.strategy: temporal}}",
     "masking.fade_frames: when names masking.strategy, which is not a parameter of this space"),
    ("parameters:\n  masking.fade_frames: {randint: [0, 5], when: {masking.strategy: temporal}}\n  masking.strategy: {choice: [none, temporal]}",
     "masking.fade_frames: when names masking.strategy, which comes after it"),
    ("parameters:\n  masking.temporal_segment: {randint: [50, 80]}\n  masking.fade_frames: {randint: [0, 5], when: {masking.temporal_segment: 60}}",
     "masking.fade_frames: when names masking.temporal_segment, a randint parameter"),
    ("parameters:\n  masking.strategy: {choice: [none, temporal]}\n  masking.fade_frames: {randint: [0, 5], when: {masking.strategy: hybrid}}",
     "masking.fade_frames: when needs masking.strategy = 'hybrid', which it cannot take"),
    ("parameters:\n  masking.freq_split: {uniform: [0.0, 0.5]}", "masking.freq_split: the config refuses 0.0: "),
    ("parameters:\n  masking.strategy: {choice: [none, bogus]}", "masking.strategy: the config refuses 'bogus'"),
    ("parameters:\n  training.epochs: {uniform: [1, 5]}", "training.epochs: the config refuses 1.0: config section 'training': epochs must be an integer"),
    ("parameters:\n  masking.strategy: {choice: [none, temporal]}\n  masking.fade_frames: {randint: [0, 80], when: {masking.strategy: temporal}}",
     "masking.fade_frames: the config refuses 79 (with masking.strategy='temporal'): "),
    ("parameters:\n  masking.temporal_segment: {randint: [12, 20]}\n  masking.fade_frames: {randint: [0, 15]}",
     "masking.temporal_segment=12 with masking.fade_frames=14: the config refuses the pair: "),
]


@pytest.mark.parametrize(("text", "expected"), BAD, ids=[f"bad{index}" for index in range(len(BAD))])
def test_a_bad_space_file_is_refused_in_one_line_naming_the_file_and_key(tmp_path, text, expected):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        SearchSpace.from_file(path, FusionTrainConfig, base_config("configs/fusion.json"))
    message = str(raised.value)
    assert message.startswith(f"search space {path}") and "\n" not in message
    assert expected in message, message


def test_a_missing_or_folder_space_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"^search space \S+nope.yaml does not exist$"):
        SearchSpace.from_file(tmp_path / "nope.yaml", FusionTrainConfig)
    with pytest.raises(ConfigError, match="is a folder"):
        SearchSpace.from_file(tmp_path, FusionTrainConfig)


def test_a_cross_section_rule_of_the_pointer_config_is_checked_in_pairs(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("parameters:\n  model.mode: {choice: [conform, edit]}\n  augmentation.crop.enabled: {choice: [false, true]}\n")
    with pytest.raises(ConfigError, match="model.mode='edit' with augmentation.crop.enabled=True: the config refuses the pair"):
        SearchSpace.from_file(path, PointerTrainConfig, base_config("configs/pointer/mini.json").with_overrides(
            {"augmentation.crop.enabled": False, "augmentation.concatenation.enabled": False}))
