"""The fusion training config: one JSON file -> one dataclass tree -> dict for Ray -> back.

    {"model": {...CascadeConfig}, "masking": {...MaskingConfig},
     "losses": {...LossWeights}, "training": {...TrainingConfig}}

Every section and key is optional (defaults below and in each module); an unknown key or a
bad value stops the run with one line naming it (``ConfigError``). Tune search spaces are
overlays on this same tree (dotted keys), never a second schema.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

from models.cascade import CascadeConfig
from models.compositional import config_from_dict
from models.losses import LossWeights
from models.masking import MaskingConfig

SCHEDULES = ("constant", "cosine")


class ConfigError(ValueError):
    """A config file or value a user must fix (exit 2 with one line)."""


@dataclass(frozen=True)
class TrainingConfig:
    """How the fusion model is trained (the notes' options; defaults documented here).

    Args:
        epochs: passes over the training pairs.
        batch_size: segments per worker per step.
        learning_rate, weight_decay: AdamW.
        schedule: ``"cosine"`` (to 0 over the run, after a linear warm-up) or ``"constant"``.
        warmup_steps: linear warm-up steps.
        grad_clip: max gradient norm (0 turns clipping off).
        mixed_precision: autocast to bfloat16 on GPU (ignored on CPU).
        seed: seeds model init, target shuffling, masks and noise (worker rank is added).
        shuffle_targets: pair each input with a random target of its batch (the notes).
        validation_fraction: share of pair ids held out (split by pair, never by segment).
        checkpoint_every_steps: also checkpoint every N steps (0: once per epoch only).
        num_to_keep: checkpoints kept, best validation loss first.
        max_failures: worker failures a run survives (FailureConfig).
        fail_at_step: fault injection for tests: the last worker exits once at this step.
        discriminator_learning_rate: the GAN discriminator's (only when gan_weight > 0).
    """

    epochs: int = 10
    batch_size: int = 4
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    schedule: str = "cosine"
    warmup_steps: int = 100
    grad_clip: float = 1.0
    mixed_precision: bool = True
    seed: int = 0
    shuffle_targets: bool = True
    validation_fraction: float = 0.1
    checkpoint_every_steps: int = 0
    num_to_keep: int = 3
    max_failures: int = 2
    fail_at_step: int | None = None
    discriminator_learning_rate: float = 1e-4

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "num_to_keep"):
            _check(isinstance(getattr(self, name), int) and getattr(self, name) >= 1, name, getattr(self, name), "a positive integer")
        for name in ("warmup_steps", "checkpoint_every_steps", "seed"):
            _check(isinstance(getattr(self, name), int) and getattr(self, name) >= 0, name, getattr(self, name), "a non-negative integer")
        _check(isinstance(self.max_failures, int) and self.max_failures >= -1, "max_failures", self.max_failures, "-1 (no limit) or more")
        for name in ("learning_rate", "discriminator_learning_rate"):
            _check(_number(getattr(self, name)) and getattr(self, name) > 0, name, getattr(self, name), "positive")
        for name in ("weight_decay", "grad_clip"):
            _check(_number(getattr(self, name)) and getattr(self, name) >= 0, name, getattr(self, name), "non-negative")
        _check(self.schedule in SCHEDULES, "schedule", self.schedule, f"one of {SCHEDULES}")
        _check(_number(self.validation_fraction) and 0 <= self.validation_fraction < 1, "validation_fraction", self.validation_fraction, "in [0, 1)")
        for name in ("mixed_precision", "shuffle_targets"):
            _check(isinstance(getattr(self, name), bool), name, getattr(self, name), "true or false")
        _check(self.fail_at_step is None or (isinstance(self.fail_at_step, int) and self.fail_at_step >= 1), "fail_at_step", self.fail_at_step, "null or a step >= 1")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check(ok: bool, name: str, value: Any, expected: str) -> None:
    if not ok:
        raise ValueError(f"{name} must be {expected}, got {value!r}")


@dataclass(frozen=True)
class FusionTrainConfig:
    model: CascadeConfig = field(default_factory=CascadeConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    losses: LossWeights = field(default_factory=LossWeights)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    SECTIONS: ClassVar[dict]  # section name -> builder from a dict (set below the class)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(),
            "masking": self.masking.to_dict(),
            "losses": self.losses.to_dict(),
            "training": asdict(self.training),
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "FusionTrainConfig":
        """Build and validate; any problem is a ``ConfigError`` naming the section and key."""
        return cls(**build_sections(values, cls.SECTIONS))

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "FusionTrainConfig":
        return cls.from_dict(read_config_file(path))

    def with_overrides(self, overrides: Mapping[str, Any]) -> "FusionTrainConfig":
        """Apply dotted-key overrides (``{"losses.corr_weight": 0.3}``), e.g. from a Tune trial."""
        return type(self).from_dict(apply_overrides(self.to_dict(), overrides))


FusionTrainConfig.SECTIONS = {
    "model": CascadeConfig.from_dict,
    "masking": MaskingConfig.from_dict,
    "losses": LossWeights.from_dict,
    "training": lambda values: config_from_dict(TrainingConfig, values),
}


# ------------------------------------------- shared by every sectioned config file


def build_sections(values: Mapping[str, Any], sections: Mapping[str, Callable[[Mapping[str, Any]], Any]]) -> dict[str, Any]:
    """Build each section of a config tree with its builder; a ``ConfigError`` names the
    section (and the builder's message the key) of any problem."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"the config must be a JSON object, got {type(values).__name__}")
    unknown = sorted(set(values) - set(sections))
    if unknown:
        raise ConfigError(f"unknown config section(s) {unknown}; the sections are {sorted(sections)}")
    built = {}
    for name, build in sections.items():
        section = values.get(name, {})
        if not isinstance(section, Mapping):
            raise ConfigError(f"config section '{name}' must be a JSON object")
        try:
            built[name] = build(section)
        except ConfigError as error:
            message = str(error)
            raise ConfigError(message if name in message.split(":")[0] else f"config section '{name}': {message}") from None
        except (ValueError, TypeError) as error:
            raise ConfigError(f"config section '{name}': {error}") from None
    return built


def read_config_file(path: str | os.PathLike) -> Any:
    """The JSON of a ``--config`` file, or a one-line ``ConfigError``."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"--config {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"--config {path} is a folder, not a JSON file") from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"--config {path} is not valid JSON (line {error.lineno}: {error.msg})") from None


def apply_overrides(values: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Set dotted keys (``section.key[.sub]``) in a config tree (a copy is not made)."""
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        if section not in values or not key:
            raise ConfigError(f"override {dotted!r} must be 'section.key' with a section of {sorted(values)}")
        target = values[section]
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return values
