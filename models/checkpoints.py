"""Training checkpoints: one ``state.pt`` in a directory (a Ray Train checkpoint).

Contents (plain tensors, dicts, lists, strings and numbers, so that
``torch.load(weights_only=True)`` reads them)::

    format      "jingle.checkpoint.v1"
    kind        "fusion" or "pointer"
    model       the model's state dict (unwrapped from DDP)
    optimizer, scheduler, discriminator, discriminator_optimizer  (training state; may be absent)
    step, epoch the step counter and the epochs completed
    config      the resolved training config (``FusionTrainConfig.to_dict()``)
    codec       the codec's ``describe()``: name, id, sample_rate, frame_rate, hop_length, dim
    data        what the model was trained on (shard folder, segment seconds)
    extra       anything else the run wants back on resume (e.g. the MLflow run id)

A checkpoint is refused with one line (``CheckpointError``) when it is missing, corrupt,
of another kind, or was trained on another codec than the one given.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

FORMAT = "jingle.checkpoint.v1"
STATE_FILE = "state.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says which and why."""


@dataclass
class TrainingState:
    kind: str
    model: dict
    step: int
    epoch: int
    config: dict
    codec: dict
    data: dict = field(default_factory=dict)
    optimizer: dict | None = None
    scheduler: dict | None = None
    discriminator: dict | None = None
    discriminator_optimizer: dict | None = None
    extra: dict = field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        payload = {"format": FORMAT, **self.__dict__}
        return {key: value for key, value in payload.items() if value is not None}


def state_path(checkpoint: str | os.PathLike) -> Path:
    """``state.pt`` of a checkpoint given as its directory or the file itself."""
    path = Path(checkpoint)
    return path / STATE_FILE if path.is_dir() else path


def save_state(directory: str | os.PathLike, state: TrainingState) -> Path:
    """Write ``directory/state.pt`` atomically (temporary file, then rename)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".state-", suffix=".pt")
    os.close(handle)
    torch.save(state.to_payload(), temporary)
    os.replace(temporary, directory / STATE_FILE)
    return directory / STATE_FILE


def load_state(checkpoint: str | os.PathLike, *, kind: str, codec_id: str | None = None) -> TrainingState:
    """Read a checkpoint safely (``weights_only=True``) and check what it is.

    Args:
        checkpoint: a checkpoint directory or its ``state.pt``.
        kind: ``"fusion"`` or ``"pointer"``.
        codec_id: when given, the codec the caller will decode with; another is refused.
    """
    path = state_path(checkpoint)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {checkpoint} not found (expected a directory with {STATE_FILE}, or the file)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated zip, a pickle of objects, random bytes: all the same to the user
        raise CheckpointError(f"checkpoint {path} is corrupt or not a jingle checkpoint ({type(error).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a jingle checkpoint (format {payload.get('format') if isinstance(payload, dict) else None!r})")
    if payload.get("kind") != kind:
        raise CheckpointError(f"checkpoint {path} is a {payload.get('kind')!r} checkpoint, not {kind!r}")
    missing = [key for key in ("model", "step", "epoch", "config", "codec") if key not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}")
    if codec_id is not None and payload["codec"].get("id") != codec_id:
        raise CheckpointError(
            f"checkpoint {path} was trained on codec {payload['codec'].get('id')}, not {codec_id}: "
            f"use the codec (and --codec-checkpoint) it was trained with"
        )
    payload.pop("format")
    return TrainingState(**payload)
