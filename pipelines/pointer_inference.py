"""What ``jingle conform`` and ``jingle edit`` share: a pointer checkpoint, read back as a
model with its features, and recordings read as log-mel frames.

Shape letters: M mel bins, T frames, S samples.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets.audio import read_mono
from datasets.features import MelFeatures
from models.checkpoints import CheckpointError, load_state
from models.pointer import PointerNetwork
from pipelines.pointer_config import PointerTrainConfig


@dataclass
class LoadedPointer:
    model: PointerNetwork
    config: PointerTrainConfig
    checkpoint: str
    step: int


def load_pointer(checkpoint: str | os.PathLike, *, mode: str, device: str = "cpu") -> LoadedPointer:
    """A trained pointer network of the given mode (``conform`` or ``edit``), in eval mode.

    Raises:
        CheckpointError: missing, corrupt, not a pointer checkpoint, or the other mode.
    """
    state = load_state(checkpoint, kind="pointer")
    config = PointerTrainConfig.from_dict(state.config)
    if config.model.mode != mode:
        other = "jingle edit" if config.model.mode == "edit" else "jingle conform"
        raise CheckpointError(f"checkpoint {checkpoint} is a {config.model.mode}-mode pointer network; use it with {other}")
    model = PointerNetwork(config.model)
    model.load_state_dict(state.model)
    return LoadedPointer(model.to(device).eval(), config, str(checkpoint), state.step)


def read_log_mel(path: str | os.PathLike, features: MelFeatures) -> tuple[np.ndarray, np.ndarray]:
    """Mono audio at the features' rate [S] and its log-mel frames [M, T]."""
    audio = read_mono(path, features.sample_rate)
    return audio, features.log_mel(audio)


def write_json(path: str | os.PathLike, payload: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
