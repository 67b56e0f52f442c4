"""Compositional creative agent (design note 004).

Two latents, an *input* (e.g. drums) and a *target* (e.g. piano), are each decomposed into
rhythm, harmony and timbre components by convolutions of growing kernel size; a selector
weighs the six components; a transformer composes the weighted components into a new
latent; a novelty term penalises an output too close to either source.

Shape letters: B batch, D latent channels (128 for the codecs), T frames (75 frames/s),
C component channels (64), E model width of the composer (512), K = 6 components.

Choices where the notes are silent:

- Conv padding is ``kernel // 2`` (every kernel is odd), so T is kept through the extractor.
  LeakyReLU uses PyTorch's default slope (0.01); the notes give none.
- The input and the target have separate extractors: a drum latent and a piano latent need
  different filters, and the two are what bring the agent to the notes' ~14.6M.
- ``ComponentSelector`` pools each component over time (mean), passes the 6·C pooled values
  through an MLP (6·C → ``selector_hidden_dim`` → 6, ReLU) and gives one *independent*
  sigmoid per component: the notes' logged weights (0.42, 0.08, …) do not sum to one, so
  they are not a softmax. The weights scale the components before the composer and are
  returned for logging.
- The positional encoding is sinusoidal (Vaswani et al.), computed for the T at hand, so
  there is no maximum length and no parameters.
- The transformer layers are PyTorch's defaults (post-norm, ReLU feed-forward of
  ``feedforward_dim``), batch-first.

Parameter counts measured at the defaults (D=128, C=64, E=512, 8 heads, 4 layers,
feed-forward 2048, selector hidden 512):

- ``MultiScaleExtractor``: 697,280 (two of them: 1,394,560)
- ``ComponentSelector``: 200,198
- ``ComponentComposer``: 12,970,880
- ``CompositionalCreativeAgent``: 14,565,638 (the notes: ~14.6M)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import torch
from torch import nn

from jingle.core.config import config_from_dict, fail, require_int
from jingle.models.blocks import FrameTransformer
from jingle.models.novelty import NoveltyTerms, novelty_loss

COMPONENT_NAMES = (
    "input_rhythm",
    "input_harmony",
    "input_timbre",
    "target_rhythm",
    "target_harmony",
    "target_timbre",
)

# (first kernel, second kernel) of each branch, from the notes: rhythm sees ~40–67 ms,
# harmony ~93–120 ms, timbre ~200–280 ms at 75 frames/s.
BRANCH_KERNELS = {"rhythm": (3, 5), "harmony": (7, 9), "timbre": (15, 21)}


@dataclass(frozen=True)
class CompositionalConfig:
    """Hyper-parameters of the compositional creative agent.

    Attributes:
        latent_dim: D, channels of the codec latents.
        component_dim: C, channels of each rhythm/harmony/timbre component.
        model_dim: E, width of the composer transformer.
        heads: attention heads (must divide ``model_dim``).
        layers: transformer encoder layers.
        feedforward_dim: hidden width of each transformer feed-forward block.
        selector_hidden_dim: hidden width of the component selector's MLP.
        dropout: dropout in the transformer and the output head.
        novelty_threshold: cosine similarity to either source allowed for free.
    """

    latent_dim: int = 128
    component_dim: int = 64
    model_dim: int = 512
    heads: int = 8
    layers: int = 4
    feedforward_dim: int = 2048
    selector_hidden_dim: int = 512
    dropout: float = 0.1
    novelty_threshold: float = 0.7

    def __post_init__(self) -> None:
        for name in ("latent_dim", "component_dim", "model_dim", "heads", "layers", "feedforward_dim", "selector_hidden_dim"):
            require_int(name, getattr(self, name), minimum=1)
        if self.model_dim % self.heads:
            fail("model_dim", f"({self.model_dim}) must be divisible by heads ({self.heads})")
        if self.model_dim % 2:
            fail("model_dim", f"must be even for the sinusoidal positional encoding, got {self.model_dim}")
        if not 0.0 <= self.dropout < 1.0:
            fail("dropout", f"must be in [0, 1), got {self.dropout}")
        if not -1.0 <= self.novelty_threshold <= 1.0:
            fail("novelty_threshold", f"is a cosine similarity in [-1, 1], got {self.novelty_threshold}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> CompositionalConfig:
        return config_from_dict(cls, values)


class ScaleBranch(nn.Sequential):
    """One branch of the extractor: Conv(D→D, k1) → LeakyReLU → Conv(D→C, k2) → LeakyReLU → BatchNorm.

    [B, D, T] -> [B, C, T].
    """

    def __init__(self, *, latent_dim: int, component_dim: int, kernels: tuple[int, int]) -> None:
        first, second = kernels
        super().__init__(
            nn.Conv1d(latent_dim, latent_dim, first, padding=first // 2),
            nn.LeakyReLU(),
            nn.Conv1d(latent_dim, component_dim, second, padding=second // 2),
            nn.LeakyReLU(),
            nn.BatchNorm1d(component_dim),
        )


@dataclass
class Components:
    """The three components of one source, each [B, C, T]."""

    rhythm: torch.Tensor
    harmony: torch.Tensor
    timbre: torch.Tensor

    def as_tuple(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.rhythm, self.harmony, self.timbre


class MultiScaleExtractor(nn.Module):
    """Rhythm (k3→k5), harmony (k7→k9) and timbre (k15→k21) components of a latent.

    [B, D, T] -> three [B, C, T].
    """

    def __init__(self, *, latent_dim: int, component_dim: int) -> None:
        super().__init__()
        self.rhythm = ScaleBranch(latent_dim=latent_dim, component_dim=component_dim, kernels=BRANCH_KERNELS["rhythm"])
        self.harmony = ScaleBranch(latent_dim=latent_dim, component_dim=component_dim, kernels=BRANCH_KERNELS["harmony"])
        self.timbre = ScaleBranch(latent_dim=latent_dim, component_dim=component_dim, kernels=BRANCH_KERNELS["timbre"])

    def forward(self, latent: torch.Tensor) -> Components:
        return Components(self.rhythm(latent), self.harmony(latent), self.timbre(latent))


class ComponentSelector(nn.Module):
    """Six attention weights in (0, 1), one per component, from the time-pooled components.

    K × [B, C, T] -> [B, K], in the order of ``COMPONENT_NAMES``.
    """

    def __init__(self, *, component_dim: int, hidden_dim: int) -> None:
        super().__init__()
        count = len(COMPONENT_NAMES)
        self.mlp = nn.Sequential(
            nn.Linear(count * component_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, count),
        )

    def forward(self, components: list[torch.Tensor]) -> torch.Tensor:
        pooled = torch.cat([component.mean(dim=2) for component in components], dim=1)  # [B, K*C]
        return torch.sigmoid(self.mlp(pooled))  # [B, K]


class ComponentComposer(nn.Module):
    """Transformer that composes the weighted components into a new latent.

    Linear(K·C → E) + positional encoding → TransformerEncoder → Linear(E → E/2) → GELU →
    Dropout → Linear(E/2 → D). [B, K·C, T] -> [B, D, T].
    """

    def __init__(self, config: CompositionalConfig) -> None:
        super().__init__()
        self.transformer = FrameTransformer(
            in_channels=len(COMPONENT_NAMES) * config.component_dim,
            model_dim=config.model_dim,
            heads=config.heads,
            layers=config.layers,
            feedforward_dim=config.feedforward_dim,
            dropout=config.dropout,
        )
        self.output_head = nn.Sequential(
            nn.Linear(config.model_dim, config.model_dim // 2),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.model_dim // 2, config.latent_dim),
        )

    def forward(self, components: torch.Tensor) -> torch.Tensor:
        hidden = self.transformer(components)  # [B, T, E]
        return self.output_head(hidden).transpose(1, 2)  # [B, D, T]


def component_weights_by_name(component_weights: torch.Tensor) -> dict[str, float]:
    """Batch mean of each component weight, ``{"input_rhythm": 0.42, …}``, for logging.

    Args:
        component_weights: [B, K] as returned in ``CompositionalOutput.component_weights``.
    """
    if component_weights.dim() != 2 or component_weights.shape[1] != len(COMPONENT_NAMES):
        raise ValueError(f"component weights must be [B, {len(COMPONENT_NAMES)}], got {tuple(component_weights.shape)}")
    means = component_weights.detach().float().mean(dim=0).tolist()
    return dict(zip(COMPONENT_NAMES, means))


@dataclass
class CompositionalOutput:
    """Result of ``CompositionalCreativeAgent.forward``.

    Attributes:
        latent: [B, D, T], the composed latent.
        component_weights: [B, K], selector weights in (0, 1), order of ``COMPONENT_NAMES``.
        novelty: the novelty terms of ``latent`` against the input and the target.
    """

    latent: torch.Tensor
    component_weights: torch.Tensor
    novelty: NoveltyTerms

    def component_weights_by_name(self) -> dict[str, float]:
        return component_weights_by_name(self.component_weights)


class CompositionalCreativeAgent(nn.Module):
    """Extract → select → compose, with the novelty loss of the result (design note 004)."""

    def __init__(self, config: CompositionalConfig) -> None:
        super().__init__()
        self.config = config
        self.input_extractor = MultiScaleExtractor(latent_dim=config.latent_dim, component_dim=config.component_dim)
        self.target_extractor = MultiScaleExtractor(latent_dim=config.latent_dim, component_dim=config.component_dim)
        self.selector = ComponentSelector(component_dim=config.component_dim, hidden_dim=config.selector_hidden_dim)
        self.composer = ComponentComposer(config)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> CompositionalOutput:
        """Compose a new latent from an input and a target latent.

        Args:
            input, target: [B, D, T] latents of the same shape.
        """
        dim = self.config.latent_dim
        if input.dim() != 3 or input.shape[1] != dim:
            raise ValueError(f"input must be [B, {dim}, T], got {tuple(input.shape)}")
        if target.shape != input.shape:
            raise ValueError(f"target must have the input's shape {tuple(input.shape)}, got {tuple(target.shape)}")
        components = [*self.input_extractor(input).as_tuple(), *self.target_extractor(target).as_tuple()]  # K × [B, C, T]
        weights = self.selector(components)  # [B, K]
        weighted = torch.cat(
            [component * weights[:, k, None, None] for k, component in enumerate(components)], dim=1
        )  # [B, K*C, T]
        latent = self.composer(weighted)  # [B, D, T]
        novelty = novelty_loss(latent, input, target, threshold=self.config.novelty_threshold)
        return CompositionalOutput(latent=latent, component_weights=weights, novelty=novelty)
