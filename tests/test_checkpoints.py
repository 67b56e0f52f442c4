"""training/checkpoints.py: a checkpoint back to a model, for any kind, or a one-line refusal."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from torch import nn

from jingle.core.config import ConfigError, SectionedConfig, TrainingConfig, config_from_dict, require_int
from jingle.training.checkpoints import CheckpointError, TrainedModel, TrainingState, check_codec, load_state, load_trained, save_state

CODEC = {"name": "mel", "id": "mel-v1-0123456789"}


@dataclass(frozen=True)
class ToyModelConfig:
    width: int = 3

    def __post_init__(self) -> None:
        require_int("width", self.width, minimum=1)


@dataclass(frozen=True)
class ToyTrainConfig(SectionedConfig):
    """A two-section config whose ``width`` lived in ``training`` in an earlier version."""

    model: ToyModelConfig = field(default_factory=ToyModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    SECTIONS: ClassVar[dict] = {
        "model": lambda values: config_from_dict(ToyModelConfig, values),
        "training": lambda values: config_from_dict(TrainingConfig, values),
    }
    MOVED: ClassVar[dict[str, str]] = {"training.width": "model.width"}


def build_toy(config: ToyTrainConfig) -> nn.Module:
    return nn.Linear(config.model.width, 2)


def save_toy(directory: Path, *, config: dict | None = None, width: int = 3, kind: str = "fusion") -> Path:
    torch.manual_seed(0)
    stored = ToyTrainConfig(model=ToyModelConfig(width)).to_dict() if config is None else config
    state = TrainingState(kind=kind, model=nn.Linear(width, 2).state_dict(), step=5, epoch=2, config=stored, codec=dict(CODEC))
    save_state(directory, state)
    return directory


def load_toy(checkpoint, **options) -> TrainedModel:
    return load_trained(checkpoint, kind="fusion", config_class=ToyTrainConfig, build_model=build_toy, **options)


def test_load_trained_rebuilds_config_and_model_in_eval_mode(tmp_path):
    directory = save_toy(tmp_path / "run")
    trained = load_toy(directory, codec_id=CODEC["id"])
    assert trained.config == ToyTrainConfig(model=ToyModelConfig(3))
    assert trained.state.step == 5 and trained.state.codec == CODEC and trained.checkpoint == str(directory)
    assert not trained.model.training and trained.model.weight.device.type == "cpu"
    torch.testing.assert_close(trained.model.state_dict(), load_state(directory, kind="fusion").model)
    # the file itself works as well as its directory
    assert load_toy(directory / "state.pt").config == trained.config


def test_a_config_stored_before_a_key_moved_still_loads(tmp_path):
    old = {"model": {}, "training": {"width": 4}}
    with pytest.raises(ConfigError, match="has moved to model.width"):
        ToyTrainConfig.from_dict(old)  # a config file is told to move the key...
    trained = load_toy(save_toy(tmp_path / "old", config=old, width=4))  # ...a stored one moves forward
    assert trained.config.model.width == 4 and trained.model.in_features == 4


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "not found (expected a directory with state.pt, or the file)"),
        ("corrupt", "is corrupt or not a jingle checkpoint"),
        ("kind", "is a 'pointer' checkpoint, not 'fusion'"),
        ("codec", f"was trained on codec {CODEC['id']}, not mel-v2-9876543210: use the codec"),
        ("config", "its stored config is not valid in this version (config section 'model': width must be ≥ 1, got 0)"),
        ("weights", "the weights do not fit its model config (Error(s) in loading state_dict for Linear:"),
    ],
)
def test_what_cannot_be_loaded_is_one_checkpoint_error_line(tmp_path, case, message):
    directory = tmp_path / case
    options = {}
    if case == "corrupt":
        directory.mkdir()
        (directory / "state.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    elif case == "kind":
        save_toy(directory, kind="pointer")
    elif case == "codec":
        save_toy(directory)
        options["codec_id"] = "mel-v2-9876543210"
    elif case == "config":
        save_toy(directory, config={"model": {"width": 0}})
    elif case == "weights":
        save_toy(directory, config=ToyTrainConfig(model=ToyModelConfig(5)).to_dict())  # weights of width 3
    with pytest.raises(CheckpointError) as raised:
        load_toy(directory, **options)
    assert message in str(raised.value) and len(str(raised.value).splitlines()) == 1, raised.value


def test_check_codec_names_both_codecs(tmp_path):
    check_codec(tmp_path, CODEC, CODEC["id"])
    with pytest.raises(CheckpointError, match=f"trained on codec {CODEC['id']}, not other-v1"):
        check_codec(tmp_path / "state.pt", CODEC, "other-v1")


def test_the_task_state_round_trips_and_an_older_checkpoints_discriminator_is_found_there(tmp_path):
    discriminator = {"weight": torch.arange(4.0)}
    optimizer_state = {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0]}]}
    state = TrainingState(kind="fusion", model={}, step=1, epoch=1, config={}, codec=dict(CODEC),
                          task_state={"discriminator": discriminator, "discriminator_optimizer": optimizer_state})
    save_state(tmp_path / "now", state)
    assert torch.equal(load_state(tmp_path / "now", kind="fusion").task_state["discriminator"]["weight"], discriminator["weight"])
    # a checkpoint written before the task state had its own entry kept the two at the top
    payload = {"format": "jingle.checkpoint.v1", "kind": "fusion", "model": {}, "step": 1, "epoch": 1, "config": {},
               "codec": dict(CODEC), "discriminator": discriminator, "discriminator_optimizer": optimizer_state}
    (tmp_path / "old").mkdir()
    torch.save(payload, tmp_path / "old" / "state.pt")
    old = load_state(tmp_path / "old", kind="fusion")
    assert torch.equal(old.task_state["discriminator"]["weight"], discriminator["weight"])
    assert old.task_state["discriminator_optimizer"] == optimizer_state
