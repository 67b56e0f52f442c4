"""The fusion training config: its sections, each beside the module that uses it.

    {"model": {...CascadeConfig}, "masking": {...MaskingConfig},
     "losses": {...LossWeights}, "training": {...core.config.TrainingConfig}}

The machinery (from-dict, overrides, moved keys, one-line ``ConfigError``) is
``core.config.SectionedConfig``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from core.config import SectionedConfig, TrainingConfig, config_from_dict
from models.cascade import CascadeConfig
from models.losses import LossWeights
from models.masking import MaskingConfig


@dataclass(frozen=True)
class FusionTrainConfig(SectionedConfig):
    model: CascadeConfig = field(default_factory=CascadeConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    losses: LossWeights = field(default_factory=LossWeights)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    SECTIONS: ClassVar[dict] = {
        "model": CascadeConfig.from_dict,
        "masking": MaskingConfig.from_dict,
        "losses": LossWeights.from_dict,
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
