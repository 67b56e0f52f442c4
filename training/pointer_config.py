"""The pointer training config: one JSON file -> one dataclass tree -> dict for Ray -> back.

    {"features": {...MelFeatures}, "alignment": {...AlignmentConfig},
     "model": {...PointerConfig}, "losses": {...PointerLossConfig}, "augmentation": {...AugmentationConfig (plan 002's keys)},
     "data": {...PointerDataConfig}, "training": {...TrainingConfig}}

Every section and key is optional; an unknown key or a bad value stops the run with one
line naming it (``ConfigError``). ``features`` and ``alignment`` are what
``jingle preprocess pointer --config`` reads; a training refuses shards made with other
features. The sections come from their own modules (``datasets/`` and ``models/``), which
is why the tree is assembled here, the one layer allowed to import both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from jingle.core.config import ConfigError, SectionedConfig, TrainingConfig, config_from_dict, fail, require_int
from jingle.datasets.alignment import AlignmentConfig
from jingle.datasets.augmentation_config import AugmentationConfig
from jingle.datasets.features import MelFeatures
from jingle.models.pointer import PointerConfig
from jingle.training.pointer_loss import PointerLossConfig


@dataclass(frozen=True)
class PointerDataConfig:
    """How stored rows become training batches.

    Attributes:
        max_edit_frames: longest edit a training sample keeps (a random window of a longer
            one in conform mode; the beginning in edit mode, where the start matters).
        max_raw_frames: longest raw a training sample keeps: a window of this length
            around every raw frame the kept edit points at, placed at random (the edit
            window shrinks until such a window exists).
        bucket_batches: batches gathered, sorted by length and cut again, so that a batch
            holds similar lengths (less padding); 1 turns bucketing off.
        repeats_per_epoch: passes over the training pairs per epoch (each with fresh
            augmentation draws and, for rows held in memory, a new order): a small corpus
            still makes a useful epoch. Rows that stream (shards over
            ``training.max_in_memory_mb``) are read again for every pass.
        min_confidence: alignment-labelled edit frames under this confidence get no loss.
    """

    max_edit_frames: int = 1500
    max_raw_frames: int = 3000
    bucket_batches: int = 4
    repeats_per_epoch: int = 1
    min_confidence: float = 0.0

    def __post_init__(self) -> None:
        for name in ("max_edit_frames", "max_raw_frames", "bucket_batches", "repeats_per_epoch"):
            require_int(name, getattr(self, name), minimum=1)
        if not 0 <= self.min_confidence <= 1:
            fail("min_confidence", f"must be in [0, 1], got {self.min_confidence!r}")


@dataclass(frozen=True)
class PointerTrainConfig(SectionedConfig):
    features: MelFeatures = field(default_factory=MelFeatures)
    alignment: AlignmentConfig = field(default_factory=AlignmentConfig)
    model: PointerConfig = field(default_factory=PointerConfig)
    losses: PointerLossConfig = field(default_factory=PointerLossConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    data: PointerDataConfig = field(default_factory=PointerDataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    SECTIONS: ClassVar[dict] = {
        "features": MelFeatures.from_dict,
        "alignment": lambda values: config_from_dict(AlignmentConfig, values),
        "model": PointerConfig.from_dict,
        "losses": PointerLossConfig.from_dict,
        "augmentation": AugmentationConfig.from_dict,
        "data": lambda values: config_from_dict(PointerDataConfig, values),
        "training": lambda values: config_from_dict(TrainingConfig, values),
    }

    # Keys of earlier versions: the loss's settings left the model section.
    MOVED: ClassVar[dict[str, str]] = {f"model.{key}": f"losses.{key}" for key in ("label_smoothing_frames", "label_smoothing", "stop_weight")}

    def __post_init__(self) -> None:
        if self.model.n_mels != self.features.n_mels:
            raise ConfigError(f"model.n_mels ({self.model.n_mels}) must equal features.n_mels ({self.features.n_mels})")
        if self.model.mode == "edit" and self.augmentation.enabled:
            # Edit mode learns where an edit starts and ends; a crop or a join moves both.
            for name in ("crop", "concatenation"):
                if getattr(self.augmentation, name).enabled:
                    raise ConfigError(
                        f"augmentation.{name} must be off in edit mode (it moves the edit's start and end, which edit mode learns); "
                        f"see configs/pointer/edit-mini.json"
                    )
