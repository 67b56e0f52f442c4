"""The ``"augmentation"`` config section of pointer training (plan 002's keys).

One frozen dataclass per augmentation, validated on construction, each with ``enabled``
and ``probability``; the section's other keys are its augmentation's keyword arguments
(``options()``), which ``datasets/augmentation.py`` passes on as they are. A bad value is
a one-line ``ConfigError`` naming its full key path, e.g.
``augmentation.noise.level_max must be ≥ level_min (0.15 < 0.2)``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from jingle.core.config import ConfigError, config_from_dict, fail, require_bool, require_choice, require_int, require_number

FILLS = ("mean", "zero")
PAIRINGS = ("random", "similar_length")
Config = TypeVar("Config")


class _Section:
    """What every augmentation section shares: a key path, ``enabled`` and ``probability``."""

    name: ClassVar[str]

    def options(self) -> dict[str, Any]:
        """The augmentation's own keys (all but ``enabled`` and ``probability``)."""
        return {item.name: getattr(self, item.name) for item in fields(self) if item.name not in ("enabled", "probability")}

    def _path(self, key: str) -> str:
        return f"augmentation.{self.name}.{key}"

    def _check_switch(self) -> None:
        require_bool(self._path("enabled"), self.enabled)
        require_number(self._path("probability"), self.probability, minimum=0.0, maximum=1.0)

    def _check_order(self, low_key: str, high_key: str) -> None:
        low, high = getattr(self, low_key), getattr(self, high_key)
        if high < low:
            fail(self._path(high_key), f"must be ≥ {low_key} ({high} < {low})")


@dataclass(frozen=True)
class NoiseConfig(_Section):
    """A1. ``level_*``: noise std relative to the mel's std."""

    name: ClassVar[str] = "noise"
    enabled: bool = True
    probability: float = 0.5
    level_min: float = 0.05
    level_max: float = 0.15
    same_on_both: bool = False

    def __post_init__(self) -> None:
        self._check_switch()
        require_number(self._path("level_min"), self.level_min, minimum=0.0)
        require_number(self._path("level_max"), self.level_max, minimum=0.0)
        self._check_order("level_min", "level_max")
        require_bool(self._path("same_on_both"), self.same_on_both)


@dataclass(frozen=True)
class GainConfig(_Section):
    """A3. ``scale_*``: linear amplitude factors, applied as ``+ log(scale)`` to log-mels."""

    name: ClassVar[str] = "gain"
    enabled: bool = True
    probability: float = 0.5
    scale_min: float = 0.7
    scale_max: float = 1.3
    same_on_both: bool = False

    def __post_init__(self) -> None:
        self._check_switch()
        require_number(self._path("scale_min"), self.scale_min, minimum=0.0, open_minimum=True)
        require_number(self._path("scale_max"), self.scale_max, minimum=0.0, open_minimum=True)
        self._check_order("scale_min", "scale_max")
        require_bool(self._path("same_on_both"), self.same_on_both)


@dataclass(frozen=True)
class ChannelDropoutConfig(_Section):
    """A4. ``dropout_rate``: probability of dropping each mel band."""

    name: ClassVar[str] = "channel_dropout"
    enabled: bool = True
    probability: float = 0.3
    dropout_rate: float = 0.1
    fill: str = "mean"

    def __post_init__(self) -> None:
        self._check_switch()
        require_number(self._path("dropout_rate"), self.dropout_rate, minimum=0.0, maximum=1.0)
        require_choice(self._path("fill"), self.fill, FILLS)


@dataclass(frozen=True)
class SpecAugmentConfig(_Section):
    """A2. Widths are maxima: mel bins for ``freq_width``, frames for ``time_width``."""

    name: ClassVar[str] = "spec_augment"
    enabled: bool = True
    probability: float = 0.5
    freq_masks: int = 2
    freq_width: int = 20
    time_masks: int = 2
    time_width: int = 50
    fill: str = "mean"

    def __post_init__(self) -> None:
        self._check_switch()
        for key in ("freq_masks", "freq_width", "time_masks", "time_width"):
            require_int(self._path(key), getattr(self, key), minimum=0)
        require_choice(self._path("fill"), self.fill, FILLS)


@dataclass(frozen=True)
class CropConfig(_Section):
    """B2. Lengths in edit frames; ``context_pad`` in raw frames each side."""

    name: ClassVar[str] = "crop"
    enabled: bool = True
    probability: float = 0.5
    min_len: int = 500
    max_len: int = 5000
    context_pad: int = 100

    def __post_init__(self) -> None:
        self._check_switch()
        require_int(self._path("min_len"), self.min_len, minimum=1)
        require_int(self._path("max_len"), self.max_len, minimum=1)
        self._check_order("min_len", "max_len")
        require_int(self._path("context_pad"), self.context_pad, minimum=0)


@dataclass(frozen=True)
class ChunkShuffleConfig(_Section):
    """B1. ``chunk_size`` in raw frames."""

    name: ClassVar[str] = "chunk_shuffle"
    enabled: bool = True
    probability: float = 0.3
    chunk_size: int = 1000

    def __post_init__(self) -> None:
        self._check_switch()
        require_int(self._path("chunk_size"), self.chunk_size, minimum=1)


@dataclass(frozen=True)
class ConcatenationConfig(_Section):
    """B3, per batch. ``max_frames`` caps both the joined raw and the joined edit (memory);
    ``pairing`` picks neighbours at random or after sorting by edit length."""

    name: ClassVar[str] = "concatenation"
    enabled: bool = False
    probability: float = 0.2
    max_frames: int = 6000
    pairing: str = "random"

    def __post_init__(self) -> None:
        self._check_switch()
        require_int(self._path("max_frames"), self.max_frames, minimum=1)
        require_choice(self._path("pairing"), self.pairing, PAIRINGS)


SECTIONS: dict[str, type[_Section]] = {
    section.name: section
    for section in (
        NoiseConfig,
        GainConfig,
        ChannelDropoutConfig,
        SpecAugmentConfig,
        CropConfig,
        ChunkShuffleConfig,
        ConcatenationConfig,
    )
}


@dataclass(frozen=True)
class AugmentationConfig:
    """The plan's ``"augmentation"`` JSON section (same keys), plus ``warmup_epochs``:
    epochs before that number see unaugmented samples (the plan's warm-up mitigation).

    A section may be given as its dataclass or as a dict of its keys (missing keys take
    their defaults)."""

    enabled: bool = True
    warmup_epochs: int = 0
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    gain: GainConfig = field(default_factory=GainConfig)
    channel_dropout: ChannelDropoutConfig = field(default_factory=ChannelDropoutConfig)
    spec_augment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    crop: CropConfig = field(default_factory=CropConfig)
    chunk_shuffle: ChunkShuffleConfig = field(default_factory=ChunkShuffleConfig)
    concatenation: ConcatenationConfig = field(default_factory=ConcatenationConfig)

    def __post_init__(self) -> None:
        for name, section_class in SECTIONS.items():
            section = getattr(self, name)
            if not isinstance(section, section_class):
                object.__setattr__(self, name, _from_dict(f"augmentation.{name}", section_class, section))
        require_bool("augmentation.enabled", self.enabled)
        require_int("augmentation.warmup_epochs", self.warmup_epochs, minimum=0)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> AugmentationConfig:
        """Build from the section itself or from ``{"augmentation": {...}}``; missing keys
        take their defaults, an unknown key or a bad value raises ``ConfigError``."""
        if isinstance(values, Mapping) and set(values) == {"augmentation"}:
            values = values["augmentation"]
        return _from_dict("augmentation", cls, values)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> AugmentationConfig:
        try:
            values = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"augmentation config {path} does not exist") from None
        except json.JSONDecodeError as error:
            raise ConfigError(f"augmentation config {path} is not valid JSON (line {error.lineno}: {error.msg})") from None
        return cls.from_dict(values)

    def to_dict(self) -> dict:
        """The section as plain JSON values (without the ``"augmentation"`` wrapper)."""
        return asdict(self)


def _from_dict(path: str, config_class: type[Config], values: Any) -> Config:
    """``config_from_dict``, with the key path in front of an error that does not name it
    already (an unknown key, a section that is no JSON object)."""
    try:
        return config_from_dict(config_class, values)
    except ConfigError as error:
        if str(error).startswith(f"{path}."):  # a bad value, named by its own key path
            raise
        raise ConfigError(f"{path}: {error}") from None
