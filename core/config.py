"""The configuration machinery every package shares; it imports neither torch nor Ray.

A training config is one JSON file -> one tree of frozen dataclasses (one per section) ->
a plain dict for Ray and checkpoints -> the same dataclasses again in a worker:

    {"model": {...}, "losses": {...}, ..., "training": {...TrainingConfig}}

Every section and key is optional (each dataclass holds its defaults). An unknown key, a
bad value, or a key that moved to another section stops the run with one line naming it
(``ConfigError``). ``--override section.key=value`` addresses the same tree by dotted keys.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, NoReturn, TypeVar

SCHEDULES = ("constant", "cosine")
# The largest training seed. Workers seed torch generators with it and with
# ``seed * 1_000_003 + rank * 10_007 + step``, which must stay below 2**64 (torch refuses more,
# in a worker, after the run has started); 32 bits keep that and suit every other generator.
MAX_SEED = 2**32 - 1
Config = TypeVar("Config")


class ConfigError(ValueError):
    """A config file or value a user must fix (exit 2 with one line)."""


# ------------------------------------------------------------------ validation


def fail(name: str, message: str) -> NoReturn:
    raise ConfigError(f"{name} {message}")


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def require_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        fail(name, f"must be true or false, got {value!r}")


def require_int(name: str, value: Any, *, minimum: int, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        fail(name, f"must be an integer, got {value!r}")
    if value < minimum:
        fail(name, f"must be ≥ {minimum}, got {value}")
    if maximum is not None and value > maximum:
        fail(name, f"must be ≤ {maximum}, got {value}")


def require_number(name: str, value: Any, *, minimum: float = -math.inf, maximum: float = math.inf,
                   open_minimum: bool = False, open_maximum: bool = False) -> None:
    """A finite-or-bounded real in [minimum, maximum] (either end open on request)."""
    if not is_number(value):
        fail(name, f"must be a number, got {value!r}")
    if value < minimum or (open_minimum and value == minimum):
        fail(name, f"must be {'>' if open_minimum else '≥'} {minimum:g}, got {value}")
    if value > maximum or (open_maximum and value == maximum):
        fail(name, f"must be {'<' if open_maximum else '≤'} {maximum:g}, got {value}")


def require_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        fail(name, f"must be one of {list(choices)}, got {value!r}")


def config_from_dict(config_class: type[Config], values: Mapping[str, Any]) -> Config:
    """Build a config dataclass from a dict, naming any key it does not know."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{config_class.__name__} must be a JSON object, got {type(values).__name__}")
    known = {field.name for field in fields(config_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown {config_class.__name__} key(s) {unknown}; known keys are {sorted(known)}")
    return config_class(**values)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A section as plain JSON values (its own ``to_dict`` when it has one)."""
    if hasattr(config, "to_dict"):
        return config.to_dict()
    return asdict(config)


# ------------------------------------------------------ the shared training section


@dataclass(frozen=True)
class TrainingConfig:
    """How a model is trained: the section both models share (defaults documented here).

    Args:
        epochs: passes over the training pairs.
        batch_size: examples per worker per step.
        learning_rate, weight_decay: AdamW.
        schedule: ``"cosine"`` (to 0 over the run, after a linear warm-up) or ``"constant"``.
        warmup_steps: linear warm-up steps.
        grad_clip: max gradient norm (0 turns clipping off).
        mixed_precision: autocast to bfloat16 on GPU (ignored on CPU).
        seed: seeds model init and every random draw of the run (worker rank is added);
            0 to 2**32 - 1.
        validation_fraction: share of pair ids held out (split by pair, never by segment).
        checkpoint_every_steps: also checkpoint every N steps (0: once per epoch only).
        num_to_keep: checkpoints kept, best validation metric first.
        max_failures: worker crashes a run survives (a killed process, a lost node), each
            restart from the latest checkpoint; -1: no limit. An error that would happen
            again (bad data, a bad config value, a bug) is never retried.
        fail_at_step: fault injection for tests: the last worker exits once at this step.
        max_in_memory_mb: shards up to this size (MB of Parquet) are read once by every
            worker and kept in memory; larger ones stream through Ray Data every epoch.
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
    validation_fraction: float = 0.1
    checkpoint_every_steps: int = 0
    num_to_keep: int = 3
    max_failures: int = 2
    fail_at_step: int | None = None
    max_in_memory_mb: int = 1024

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "num_to_keep"):
            require_int(name, getattr(self, name), minimum=1)
        for name in ("warmup_steps", "checkpoint_every_steps", "max_in_memory_mb"):
            require_int(name, getattr(self, name), minimum=0)
        require_int("seed", self.seed, minimum=0, maximum=MAX_SEED)
        require_int("max_failures", self.max_failures, minimum=-1)
        require_number("learning_rate", self.learning_rate, minimum=0.0, open_minimum=True)
        for name in ("weight_decay", "grad_clip"):
            require_number(name, getattr(self, name), minimum=0.0)
        require_choice("schedule", self.schedule, SCHEDULES)
        require_number("validation_fraction", self.validation_fraction, minimum=0.0, maximum=1.0, open_maximum=True)
        require_bool("mixed_precision", self.mixed_precision)
        if self.fail_at_step is not None:
            require_int("fail_at_step", self.fail_at_step, minimum=1)


# ------------------------------------------------------------- sectioned configs


class SectionedConfig:
    """A config tree made of named sections: file -> dataclasses -> dict -> dataclasses.

    A subclass is a frozen dataclass whose fields are its sections, and sets:

    - ``SECTIONS``: section name -> builder from a dict (usually ``X.from_dict``);
    - ``MOVED``: old dotted key -> new dotted key, so that an old config file stops with
      one line naming the new place (and a checkpoint's stored config is moved forward).
    """

    SECTIONS: ClassVar[dict[str, Callable[[Mapping[str, Any]], Any]]] = {}
    MOVED: ClassVar[dict[str, str]] = {}

    def to_dict(self) -> dict[str, Any]:
        return {name: config_to_dict(getattr(self, name)) for name in self.SECTIONS}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]):
        """Build and validate; any problem is a ``ConfigError`` naming the section and key."""
        for old, new in cls.MOVED.items():
            if _has_dotted(values, old):
                raise ConfigError(f"config key {old} has moved to {new}: rename it in the config file")
        return cls(**build_sections(values, cls.SECTIONS))

    @classmethod
    def from_file(cls, path: str | os.PathLike):
        return cls.from_dict(read_config_file(path))

    @classmethod
    def from_stored(cls, values: Mapping[str, Any]):
        """A config stored by an earlier version (in a checkpoint): moved keys move forward."""
        values = json.loads(json.dumps(values))  # a deep copy of plain JSON values
        for old, new in cls.MOVED.items():
            if _has_dotted(values, old):
                value = _pop_dotted(values, old)
                _set_dotted(values, new, value)
        return cls.from_dict(values)

    def with_overrides(self, overrides: Mapping[str, Any]):
        """Apply dotted-key overrides (``{"losses.corr_weight": 0.3}``), e.g. from ``--override``."""
        return type(self).from_dict(apply_overrides(self.to_dict(), overrides))


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
        except (ValueError, TypeError) as error:
            message = str(error)
            if isinstance(error, ConfigError) and message.split(" ")[0].startswith(f"{name}."):
                raise ConfigError(message) from None  # already names its full path
            raise ConfigError(f"config section '{name}': {message}") from None
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
    """Set dotted keys (``section.key[.sub]``) in a config tree (in place; returns it)."""
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        if section not in values or not key:
            raise ConfigError(f"override {dotted!r} must be 'section.key' with a section of {sorted(values)}")
        _set_dotted(values, dotted, value)
    return values


def _has_dotted(values: Mapping[str, Any], dotted: str) -> bool:
    *parents, leaf = dotted.split(".")
    for parent in parents:
        values = values.get(parent) if isinstance(values, Mapping) else None
        if not isinstance(values, Mapping):
            return False
    return leaf in values


def _pop_dotted(values: dict[str, Any], dotted: str) -> Any:
    *parents, leaf = dotted.split(".")
    for parent in parents:
        values = values[parent]
    return values.pop(leaf)


def _set_dotted(values: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for parent in parents:
        values = values.setdefault(parent, {})
    values[leaf] = value
