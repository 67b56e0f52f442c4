"""pipelines/pointer_inference.py: a pointer checkpoint back to a network of the right mode."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from jingle.training.checkpoints import CheckpointError, TrainingState, save_state
from jingle.models.pointer import PointerNetwork
from jingle.training.pointer_config import PointerTrainConfig
from jingle.pipelines.pointer_inference import load_pointer, read_log_mel, write_json
from tests.conftest import tone, write

TINY = {"model_dim": 32, "heads": 2, "encoder_layers": 1, "decoder_layers": 1, "feedforward_dim": 64, "conv_kernel": 3, "dropout": 0.0}


def save_pointer(directory: Path, mode: str) -> Path:
    torch.manual_seed(0)
    # edit mode learns where an edit starts and ends: no augmentation that moves them
    config = PointerTrainConfig.from_dict({"model": {**TINY, "mode": mode}, "augmentation": {"enabled": False}})
    state = TrainingState(kind="pointer", model=PointerNetwork(config.model).state_dict(), step=3, epoch=1,
                          config=config.to_dict(), codec={"name": "log-mel", "id": "features"})
    save_state(directory, state)
    return directory


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pointer-checkpoints")
    return {mode: save_pointer(root / mode, mode) for mode in ("conform", "edit")}


def test_load_pointer_rebuilds_the_network_of_its_mode(checkpoints):
    for mode, checkpoint in checkpoints.items():
        loaded = load_pointer(checkpoint, mode=mode)
        assert isinstance(loaded.model, PointerNetwork) and not loaded.model.training
        assert isinstance(loaded.config, PointerTrainConfig) and loaded.config.model.mode == mode
        assert loaded.checkpoint == str(checkpoint) and loaded.state.step == 3


@pytest.mark.parametrize(
    "stored, asked, message",
    [
        ("conform", "edit", "is a conform-mode pointer network; use it with jingle conform"),
        ("edit", "conform", "is a edit-mode pointer network; use it with jingle edit"),
    ],
)
def test_load_pointer_refuses_the_other_mode(checkpoints, stored, asked, message):
    with pytest.raises(CheckpointError, match=message):
        load_pointer(checkpoints[stored], mode=asked)


def test_load_pointer_refuses_a_fusion_checkpoint(tmp_path):
    save_state(tmp_path, TrainingState(kind="fusion", model={}, step=0, epoch=0, config={}, codec={}))
    with pytest.raises(CheckpointError, match="is a 'fusion' checkpoint, not 'pointer'"):
        load_pointer(tmp_path, mode="conform")


def test_read_log_mel_and_write_json(tmp_path):
    features = PointerTrainConfig().features
    path = write(tmp_path / "a.wav", tone(1.0, 44_100), 44_100)
    audio, mel = read_log_mel(path, features)
    assert len(audio) == features.sample_rate and mel.shape[0] == features.n_mels
    written = write_json(tmp_path / "deep" / "out.json", {"a": 1})
    assert written.read_text() == '{\n  "a": 1\n}\n'
