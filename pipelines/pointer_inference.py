"""What ``jingle conform`` and ``jingle edit`` share: a pointer checkpoint, read back as a
model with its features, and recordings read as log-mel frames.

Shape letters: M mel bins, T frames, S samples.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from jingle.datasets.audio import read_mono
from jingle.datasets.features import MelFeatures
from jingle.training.checkpoints import CheckpointError, TrainedModel, load_trained
from jingle.pipelines.tasks import get_task


def load_pointer(checkpoint: str | os.PathLike, *, mode: str, device: str = "cpu") -> TrainedModel:
    """A trained pointer network of the given mode (``conform`` or ``edit``), in eval mode;
    its ``config`` is the ``PointerTrainConfig`` (features, alignment, model...).

    Raises:
        CheckpointError: missing, corrupt, not a pointer checkpoint, a stored config that
            no longer validates, weights that do not fit it, or the other mode.
    """
    task = get_task("pointer")
    trained = load_trained(checkpoint, kind=task.name, config_class=task.config_class, build_model=task.build_model, device=device)
    stored_mode = trained.config.model.mode
    if stored_mode != mode:
        other = "jingle edit" if stored_mode == "edit" else "jingle conform"
        raise CheckpointError(f"checkpoint {checkpoint} is a {stored_mode}-mode pointer network; use it with {other}")
    return trained


def read_log_mel(path: str | os.PathLike, features: MelFeatures) -> tuple[np.ndarray, np.ndarray]:
    """Mono audio at the features' rate [S] and its log-mel frames [M, T]."""
    audio = read_mono(path, features.sample_rate)
    return audio, features.log_mel(audio)


def write_json(path: str | os.PathLike, payload: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
