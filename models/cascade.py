"""Cascade fusion model: transformer stage 1, a creative agent, transformer stage 2.

Shape letters: B batch, D latent channels, T frames, W window frames, P window pairs,
E transformer width.

    input [B, D, T] --(anti-cheating noise, training only)--> stage 1 --> context [B, D, T]
    agent(context, target)  --> creative [B, D, T]          (compositional)
                            --> P x creative [B, D, W]      (adaptive window)
    stage 2(concat(creative, context window)) --> output, one per creative latent

Choices where the design notes are silent:

- Stage 1 reads the input latent only; the target reaches the model through the agent,
  so the agent is where the two are combined (the notes' cascade).
- Stage 2 reads the agent's output concatenated with the stage-1 context at the same
  frames (for the adaptive agent, the context window the agent itself composed from), so
  that it refines the composition with the input's structure in view instead of having to
  rebuild it from the agent's 128 channels alone.
- ``num_stages=1`` is the single-stage baseline: one stage reads input and target
  concatenated ([B, 2D, T]) and no agent is used. Only 1 and 2 stages exist.
- ``anti_cheating`` adds Gaussian noise of that many standard deviations (of each example's
  input latent) to the input in training, so the model cannot copy the input through.
- Every output comes with the reference latents it should be compared with: the input
  and target themselves, or, for the adaptive agent, the raw input and target windows
  sampled where the agent looked (same starts and ratios, before tonality reduction), so
  that the losses compare like with like.
- Novelty (note 004) is measured between each final output and its references, at
  ``compositional.novelty_threshold``, and averaged over pairs, as the notes average the
  pair losses.
- The adaptive agent's reference windows are cut with the selection detached (and are
  constants of the loss): otherwise the selector could lower the loss by choosing
  references that are easy to differ from (flat, silent) instead of windows that make a
  better output.
- ``target_skip``: the last stage writes a change to the target's latent (output = target
  + stage output) instead of a whole latent. Without it, the target's spectral detail
  (the partials of its notes) reaches the output only through the agent's components
  (``component_dim`` channels each) and the stage's width: the demo-size model (16 and 64)
  wrote the target's harmony smeared across mel bands, heard as few and unclear notes.
  With it, the stages learn what to keep, silence and add. Off by default so that
  checkpoints written before it load unchanged; the shipped configs turn it on.

Parameter counts at the defaults (``jingle models summary`` prints them): two stages of
4 layers at E=512 are 25.5M; with the compositional agent (14.6M) 40.1M, with the adaptive
window agent (21.3M: window selector 6.7M on top) 46.8M; the single-stage baseline 12.8M.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Mapping

import torch
from torch import nn

from jingle.models.adaptive_window import AdaptiveWindowConfig, AdaptiveWindowCreativeAgent
from jingle.models.blocks import FrameTransformer
from jingle.core.config import config_from_dict, fail, require_int
from jingle.models.compositional import COMPONENT_NAMES, CompositionalConfig, CompositionalCreativeAgent
from jingle.models.novelty import NoveltyTerms, novelty_loss

AGENTS = ("none", "compositional", "adaptive_window")


@dataclass(frozen=True)
class CascadeConfig:
    """Everything needed to rebuild a fusion model (stored in every checkpoint).

    Args:
        latent_dim: codec channels D.
        model_dim: transformer width E of each stage.
        heads, layers_per_stage, feedforward_dim, dropout: each stage's transformer.
        num_stages: 2 (stage 1, agent, stage 2) or 1 (single stage, no agent).
        agent: ``"compositional"`` or ``"adaptive_window"`` with 2 stages, ``"none"`` with 1.
        anti_cheating: input noise in training, in standard deviations of the input.
        target_skip: the last stage's output is added to the target latent (module
            docstring); the compositional agent and the single stage only.
        compositional: the compositional agent's config (also the shared agent inside the
            adaptive window agent).
        adaptive_window: window selection settings (its ``compositional`` is replaced by
            the one above, so there is one source of truth).
    """

    latent_dim: int = 128
    model_dim: int = 512
    heads: int = 8
    layers_per_stage: int = 4
    feedforward_dim: int = 2048
    dropout: float = 0.1
    num_stages: int = 2
    agent: str = "compositional"
    anti_cheating: float = 0.0
    target_skip: bool = False
    compositional: CompositionalConfig = field(default_factory=CompositionalConfig)
    adaptive_window: AdaptiveWindowConfig = field(default_factory=AdaptiveWindowConfig)

    def __post_init__(self) -> None:
        # The latent width is given once, here; the agents' configs take it from this one,
        # and the adaptive agent's shared compositional agent is the field above.
        compositional = self.compositional
        if isinstance(compositional, Mapping):
            compositional = CompositionalConfig.from_dict({**compositional, "latent_dim": self.latent_dim})
        elif compositional.latent_dim != self.latent_dim:
            compositional = replace(compositional, latent_dim=self.latent_dim)
        object.__setattr__(self, "compositional", compositional)
        window = self.adaptive_window if isinstance(self.adaptive_window, Mapping) else _shallow(self.adaptive_window)
        window = {**window, "latent_dim": self.latent_dim, "compositional": compositional}
        object.__setattr__(self, "adaptive_window", AdaptiveWindowConfig.from_dict(window))
        for name in ("latent_dim", "model_dim", "heads", "layers_per_stage", "feedforward_dim"):
            require_int(name, getattr(self, name), minimum=1)
        if self.model_dim % self.heads:
            fail("model_dim", f"({self.model_dim}) must be divisible by heads ({self.heads})")
        if not 0.0 <= self.dropout < 1.0:
            fail("dropout", f"must be in [0, 1), got {self.dropout}")
        if self.agent not in AGENTS:
            fail("agent", f"must be one of {AGENTS}, got {self.agent!r}")
        if self.num_stages not in (1, 2):
            fail("num_stages", f"must be 1 or 2, got {self.num_stages!r}")
        if (self.num_stages == 1) != (self.agent == "none"):
            raise ValueError(
                f"num_stages={self.num_stages} needs agent={'none' if self.num_stages == 1 else 'compositional or adaptive_window'}, "
                f"got agent={self.agent!r}"
            )
        if not self.anti_cheating >= 0.0:
            fail("anti_cheating", f"must be non-negative, got {self.anti_cheating}")
        if not isinstance(self.target_skip, bool):
            fail("target_skip", f"must be true or false, got {self.target_skip!r}")
        if self.target_skip and self.agent == "adaptive_window":
            fail("target_skip", "works with the compositional agent and the single stage, not adaptive_window "
                             "(its outputs are windows, not the target's frames)")

    @property
    def output_frames_from_input(self) -> bool:
        """Whether outputs have the input's frame count (else ``adaptive_window.window_frames``)."""
        return self.agent != "adaptive_window"

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["adaptive_window"] = self.adaptive_window.to_dict()
        values["adaptive_window"].pop("compositional")  # one source of truth: the field above
        for agent in ("compositional", "adaptive_window"):
            values[agent].pop("latent_dim")  # one source of truth: latent_dim above
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "CascadeConfig":
        return config_from_dict(cls, values)


def _shallow(config: AdaptiveWindowConfig) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in fields(config)}


class TransformerStage(nn.Module):
    """A cascade stage: ``FrameTransformer`` (pre-norm, GELU) and a linear head, over frames."""

    def __init__(self, *, in_channels: int, out_channels: int, config: CascadeConfig) -> None:
        super().__init__()
        self.transformer = FrameTransformer(
            in_channels=in_channels,
            model_dim=config.model_dim,
            heads=config.heads,
            layers=config.layers_per_stage,
            feedforward_dim=config.feedforward_dim,
            dropout=config.dropout,
            norm_first=True,
            activation="gelu",
        )
        self.project_out = nn.Linear(config.model_dim, out_channels)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """[B, C_in, T] -> [B, C_out, T]."""
        hidden = self.transformer(latent)  # [B, T, E]
        return self.project_out(hidden).transpose(1, 2)  # [B, C_out, T]


@dataclass
class FusionOutput:
    """What the fusion model returns.

    Attributes:
        outputs: P latents ([B, D, T] each; P=1 unless the adaptive agent made P pairs).
        input_references, target_references: per output, the latents it is compared with.
        novelty: per output, novelty of the output against its references.
        component_weights: [B, 6] in ``COMPONENT_NAMES`` order (mean over pairs), or None.
        window_metadata: the adaptive agent's selection per pair, or None.
        window_selection: the adaptive agent's raw selection tensors ([B, P] each), or None.
    """

    outputs: list[torch.Tensor]
    input_references: list[torch.Tensor]
    target_references: list[torch.Tensor]
    novelty: list[NoveltyTerms]
    component_weights: torch.Tensor | None = None
    window_metadata: dict | None = None
    window_selection: Any = None

    @property
    def novelty_mean(self) -> NoveltyTerms:
        """Novelty averaged over outputs (the notes' mean over pairs)."""
        return NoveltyTerms(
            loss=torch.stack([n.loss for n in self.novelty]).mean(),
            similarity_to_input=torch.stack([n.similarity_to_input for n in self.novelty]).mean(),
            similarity_to_target=torch.stack([n.similarity_to_target for n in self.novelty]).mean(),
        )

    def component_weights_by_name(self) -> dict[str, float]:
        if self.component_weights is None:
            return {}
        means = self.component_weights.detach().float().mean(dim=0)
        return {name: float(value) for name, value in zip(COMPONENT_NAMES, means)}


class CascadeFusionModel(nn.Module):
    """The fusion model; build it with ``build_fusion_model(config)``."""

    def __init__(self, config: CascadeConfig, *, agent: nn.Module | None) -> None:
        super().__init__()
        self.config = config
        dim = config.latent_dim
        if config.num_stages == 1:
            self.stage1 = TransformerStage(in_channels=2 * dim, out_channels=dim, config=config)
            self.stage2 = None
        else:
            self.stage1 = TransformerStage(in_channels=dim, out_channels=dim, config=config)
            self.stage2 = TransformerStage(in_channels=2 * dim, out_channels=dim, config=config)
        self.agent = agent

    def forward(
        self,
        input: torch.Tensor,
        target: torch.Tensor,
        *,
        input_reference: torch.Tensor | None = None,
        target_reference: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> FusionOutput:
        """Fuse an input and a target latent.

        Args:
            input, target: [B, D, T] (T at least the adaptive window's source length).
            input_reference, target_reference: [B, D, T] latents the outputs are compared
                with (default: ``input`` and ``target``); training passes the unmasked ones
                when the model sees masked inputs.
            generator: randomness of the anti-cheating noise (training only).
        """
        dim = self.config.latent_dim
        for name, latent in (("input", input), ("target", target)):
            if latent.dim() != 3 or latent.shape[1] != dim:
                raise ValueError(f"{name} must be [B, {dim}, T], got {tuple(latent.shape)}")
        if input.shape[0] != target.shape[0] or (input.shape[2] != target.shape[2] and self.config.output_frames_from_input):
            raise ValueError(f"input {tuple(input.shape)} and target {tuple(target.shape)} must share batch and frames")
        input_reference = input if input_reference is None else input_reference
        target_reference = target if target_reference is None else target_reference
        noisy_input = self._anti_cheating(input, generator)
        if self.config.num_stages == 1:
            output = self._skip(self.stage1(torch.cat([noisy_input, target], dim=1)), target)  # [B, D, T]
            novelty = self._novelty(output, input_reference, target_reference)
            return FusionOutput([output], [input_reference], [target_reference], [novelty])
        context = self.stage1(noisy_input)  # [B, D, T]
        if isinstance(self.agent, AdaptiveWindowCreativeAgent):
            return self._adaptive(target, context, input_reference, target_reference)
        composed = self.agent(context, target)
        output = self._skip(self.stage2(torch.cat([composed.latent, context], dim=1)), target)  # [B, D, T]
        return FusionOutput(
            outputs=[output],
            input_references=[input_reference],
            target_references=[target_reference],
            novelty=[self._novelty(output, input_reference, target_reference)],
            component_weights=composed.component_weights,
        )

    def _adaptive(
        self, target: torch.Tensor, context: torch.Tensor, input_reference: torch.Tensor, target_reference: torch.Tensor
    ) -> FusionOutput:
        """Stage 2 over every window pair; references are sampled where the agent looked."""
        agent: AdaptiveWindowCreativeAgent = self.agent
        composed = agent(context, target)
        selection = composed.selection
        frames = agent.config.window_frames
        outputs, input_windows, target_windows, novelty = [], [], [], []
        for pair, (creative, context_window) in enumerate(zip(composed.latents, composed.input_windows)):
            output = self.stage2(torch.cat([creative, context_window], dim=1))  # [B, D, W]
            # The references are sampled where the agent looked, with the selection
            # detached: the selector learns from what its windows make the output, never
            # from choosing flat or silent references that are easy to differ from.
            input_window = agent.compressor(
                input_reference, selection.start_input[:, pair].detach(), selection.ratio_input[:, pair].detach(), frames=frames
            )  # [B, D, W]
            target_window = agent.compressor(
                target_reference, selection.start_target[:, pair].detach(), selection.ratio_target[:, pair].detach(), frames=frames
            )  # [B, D, W]
            outputs.append(output)
            input_windows.append(input_window.detach())
            target_windows.append(target_window.detach())
            novelty.append(self._novelty(output, input_window, target_window))
        weights = torch.stack([pair.component_weights for pair in composed.pair_outputs]).mean(dim=0)  # [B, 6]
        return FusionOutput(
            outputs=outputs,
            input_references=input_windows,
            target_references=target_windows,
            novelty=novelty,
            component_weights=weights,
            window_metadata=composed.metadata,
            window_selection=selection,
        )

    def _skip(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The last stage's output, or with ``target_skip`` that change added to the target. [B, D, T]"""
        return output + target if self.config.target_skip else output

    def _novelty(self, output: torch.Tensor, input_reference: torch.Tensor, target_reference: torch.Tensor) -> NoveltyTerms:
        """Novelty of one output against its references, at the configured threshold."""
        return novelty_loss(output, input_reference, target_reference, threshold=self.config.compositional.novelty_threshold)

    def _anti_cheating(self, input: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if not (self.training and self.config.anti_cheating > 0):
            return input
        scale = input.detach().flatten(1).std(dim=1).view(-1, 1, 1)  # [B, 1, 1]
        noise = torch.randn(input.shape, generator=generator, device=input.device, dtype=input.dtype)
        return input + self.config.anti_cheating * scale * noise


def _build_agent(config: CascadeConfig) -> nn.Module | None:
    if config.agent == "compositional":
        return CompositionalCreativeAgent(config.compositional)
    if config.agent == "adaptive_window":
        return AdaptiveWindowCreativeAgent(config.adaptive_window)
    return None


def build_fusion_model(config: CascadeConfig) -> CascadeFusionModel:
    """The fusion model for ``config``: the agent is chosen here, not inside the model."""
    return CascadeFusionModel(config, agent=_build_agent(config))
