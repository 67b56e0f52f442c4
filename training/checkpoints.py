"""Training checkpoints: one ``state.pt`` in a directory (a Ray Train checkpoint).

Contents (plain tensors, dicts, lists, strings and numbers, so that
``torch.load(weights_only=True)`` reads them)::

    format      "jingle.checkpoint.v1"
    kind        "fusion" or "pointer"
    model       the model's state dict (unwrapped from DDP)
    optimizer, scheduler  (training state; may be absent)
    task_state  the task's own training state (the fusion model's discriminator and its
                optimiser; a checkpoint from before it had its own entry kept them at the top)
    step, epoch the step counter and the epochs completed
    config      the resolved training config (``FusionTrainConfig.to_dict()``)
    codec       the codec's ``describe()``: name, id, sample_rate, frame_rate, hop_length, dim
    data        what the model was trained on (shard folder, segment seconds)
    extra       anything else the run wants back on resume (e.g. the MLflow run id)

A checkpoint is refused with one line (``CheckpointError``) when it is missing, corrupt,
of another kind, or was trained on another codec than the one given; ``load_trained``
also refuses one whose stored config no longer validates or whose weights do not fit it.

``load_trained`` is the one way back from a checkpoint to a model, for both kinds: the
caller passes the config class and the model builder (this module imports no pipeline or
dataset code), and adds its own checks (the fusion codec, the pointer mode) on the result.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

FORMAT = "jingle.checkpoint.v1"
MOVED_TO_TASK_STATE = ("discriminator", "discriminator_optimizer")
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
    task_state: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        payload = {"format": FORMAT, **self.__dict__}
        return {key: value for key, value in payload.items() if value is not None}


def state_path(checkpoint: str | os.PathLike) -> Path:
    """``state.pt`` of a checkpoint given as its directory or the file itself."""
    path = Path(checkpoint)
    return path / STATE_FILE if path.is_dir() else path


def _state_source(checkpoint: str | os.PathLike):
    """(name for messages, what ``torch.load`` reads): a local ``state.pt``, or the bytes of
    one in an object store (``s3://.../checkpoint_000003``)."""
    import io

    from jingle.core.storage import Location, StorageError, is_remote

    missing = f"checkpoint {checkpoint} not found (expected a directory with {STATE_FILE}, or the file)"
    if not is_remote(checkpoint):
        path = state_path(checkpoint)
        if not path.is_file():
            raise CheckpointError(missing)
        return path, path
    location = Location.of(checkpoint)
    for candidate in (location / STATE_FILE, location):
        try:
            return candidate.uri, io.BytesIO(candidate.read_bytes())
        except (FileNotFoundError, IsADirectoryError):
            continue
        except StorageError as error:
            raise CheckpointError(f"checkpoint {error}") from None
    raise CheckpointError(missing)


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
    path, source = _state_source(checkpoint)
    try:
        payload = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated zip, a pickle of objects, random bytes: all the same to the user
        raise CheckpointError(f"checkpoint {path} is corrupt or not a jingle checkpoint ({type(error).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a jingle checkpoint (format {payload.get('format') if isinstance(payload, dict) else None!r})")
    if payload.get("kind") != kind:
        raise CheckpointError(f"checkpoint {path} is a {payload.get('kind')!r} checkpoint, not {kind!r}")
    missing = [key for key in ("model", "step", "epoch", "config", "codec") if key not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}")
    if codec_id is not None:
        check_codec(checkpoint, payload["codec"], codec_id)
    payload.pop("format")
    for key in MOVED_TO_TASK_STATE:  # written before the task's state had its own entry
        if key in payload:
            payload.setdefault("task_state", {})[key] = payload.pop(key)
    return TrainingState(**payload)


def check_codec(checkpoint: str | os.PathLike, stored_codec: dict, codec_id: str) -> None:
    """Refuse a checkpoint whose codec (its ``codec`` entry) is not ``codec_id``."""
    if stored_codec.get("id") != codec_id:
        raise CheckpointError(
            f"checkpoint {state_path(checkpoint)} was trained on codec {stored_codec.get('id')}, not {codec_id}: "
            f"use the codec (and --codec-checkpoint) it was trained with"
        )


@dataclass
class TrainedModel:
    """A checkpoint read back as a model ready for inference.

    Attributes:
        state: what the checkpoint holds (step, codec, data, the stored config dict...).
        config: the full training config, rebuilt by the caller's config class.
        model: the model, weights loaded, on the requested device, in eval mode.
        checkpoint: the checkpoint as the caller named it (for reports).
    """

    state: TrainingState
    config: Any
    model: nn.Module
    checkpoint: str


def load_trained(
    checkpoint: str | os.PathLike,
    *,
    kind: str,
    config_class: type,
    build_model: Callable[[Any], nn.Module],
    device: str | torch.device = "cpu",
    codec_id: str | None = None,
) -> TrainedModel:
    """Read a checkpoint, rebuild its config and its model, and load the weights.

    Args:
        checkpoint: a checkpoint directory or its ``state.pt``.
        kind: ``"fusion"`` or ``"pointer"``.
        config_class: the training config class (a ``core.config.SectionedConfig``); the
            stored config is rebuilt with its ``from_stored``, which moves keys that an
            earlier version kept elsewhere, so older checkpoints still load.
        build_model: full training config -> an untrained model of the same shape.
        device: where the model goes.
        codec_id: when given, the codec the caller will use; another is refused.
    Raises:
        CheckpointError: missing, corrupt, of another kind, trained on another codec, a
            stored config that no longer validates, or weights that do not fit the model.
    """
    state = load_state(checkpoint, kind=kind, codec_id=codec_id)
    try:
        config = config_class.from_stored(state.config)
    except (ValueError, TypeError) as error:  # ConfigError is a ValueError
        raise CheckpointError(f"checkpoint {checkpoint}: its stored config is not valid in this version ({_first_line(error)})") from None
    model = build_model(config)
    try:
        model.load_state_dict(state.model)
    except RuntimeError as error:
        raise CheckpointError(f"checkpoint {checkpoint}: the weights do not fit its model config ({_first_line(error)})") from None
    return TrainedModel(state=state, config=config, model=model.to(device).eval(), checkpoint=str(checkpoint))


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
