"""The fusion training config: its sections, each beside the module that uses it.

    {"model": {...CascadeConfig}, "masking": {...MaskingConfig},
     "losses": {...LossWeights}, "validation": {...ValidationConfig},
     "training": {...core.config.TrainingConfig}}

The machinery (from-dict, overrides, moved keys, one-line ``ConfigError``) is
``core.config.SectionedConfig``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from jingle.core.config import SectionedConfig, TrainingConfig, config_from_dict, require_bool, require_int
from jingle.models.cascade import CascadeConfig
from jingle.training.losses import LossWeights
from jingle.models.masking import MaskingConfig


@dataclass(frozen=True)
class ValidationConfig:
    """How held-out segments are judged at every validation.

    Attributes:
        score_segments: held-out segments decoded and scored for ``val_score`` (the
            arrangement score, ``evaluation/arrangement.py``), the first ones in a fixed
            order; 0 turns the score off (checkpoints are then chosen by the last epoch).
            Decoding costs ~1.5 s per 16 s segment with the mel codec's Griffin-Lim on
            one CPU core, so the default keeps a validation short.
        score_shortcuts: also score the shortcuts on those segments, once per worker
            (``val_score_<shortcut>``): every epoch then shows whether the model beats them.
            They cost the first validation ~0.3 s per segment and shortcut on one CPU core;
            a short run (the demo) may leave them to ``jingle evaluate fusion``.
    """

    score_segments: int = 8
    score_shortcuts: bool = True

    def __post_init__(self) -> None:
        require_int("score_segments", self.score_segments, minimum=0)
        require_bool("score_shortcuts", self.score_shortcuts)


@dataclass(frozen=True)
class FusionTrainConfig(SectionedConfig):
    model: CascadeConfig = field(default_factory=CascadeConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    losses: LossWeights = field(default_factory=LossWeights)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    SECTIONS: ClassVar[dict] = {
        "model": CascadeConfig.from_dict,
        "masking": MaskingConfig.from_dict,
        "losses": LossWeights.from_dict,
        "validation": lambda values: config_from_dict(ValidationConfig, values),
        "training": lambda values: config_from_dict(TrainingConfig, values),
    }
    # Keys of earlier versions: fusion-only options left the shared training section, and
    # the latent width is given once, by the model (the agents take it from there).
    MOVED: ClassVar[dict[str, str]] = {
        "training.shuffle_targets": "losses.shuffle_targets",
        "training.discriminator_learning_rate": "losses.discriminator_learning_rate",
        "model.compositional.latent_dim": "model.latent_dim",
        "model.adaptive_window.latent_dim": "model.latent_dim",
    }
