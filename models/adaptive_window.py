"""Adaptive window creative agent (design note 001).

From a long input and a long target latent, a ``WindowSelector`` predicts ``num_pairs``
pairs of windows (a start and a compression ratio for each source, and one tonality
strength per pair). Each window is cut out and time-compressed by ``TemporalCompressor``,
reshaped harmonically by a ``TonalityReducer``, and the pair goes through one shared
``CompositionalCreativeAgent``. The training loss is the mean of the pair losses, so every
pair receives gradients (the notes reject argmin for that reason).

Shape letters: B batch, D latent channels, T_in / T_tgt frames of the input / target,
W = ``window_frames`` frames of a window, P pairs, S = ``pooled_steps``.

Frame counts are never fixed here: callers give ``window_frames`` from seconds × frame
rate (16 s at 75 frames/s = 1200 frames). A source must hold at least
``window_frames · max_ratio`` frames (24 s for a 16 s window at 1.5×), the
``min_source_frames`` of the config.

Choices where the notes are silent or contradict themselves:

- Starts are predictions, so a window is not cut by integer slicing (no gradient reaches
  a start through an index). ``TemporalCompressor`` samples the source at fractional
  frames ``start + j·ratio`` with linear interpolation (``grid_sample``): extraction and
  compression in one differentiable step, with gradients to the start and the ratio.
- With ratio r a window covers ``W·r`` source frames, so the start range is
  ``[0, T − W·r]`` (the notes' ``[0, T_in − T_win]`` at r = 1): the window always lies
  inside the source. The range shrinks as r grows, so r also moves the start.
- Every selector output passes a sigmoid into its range. The last layer starts with zero
  weights and biases that put the pairs at the start, the middle and the end of their
  ranges (``sigmoid(∓6)``: 0.25 % from the edge, not exactly 0 / 1, so that gradients
  still flow), ratios at ``1 + (max_ratio − 1)·sigmoid(−6)`` ≈ 1.001 and strengths at
  ``initial_strength``. With one pair, it starts in the middle.
- The tonality strength of a pair is applied to both its input and its target window
  (notes: "learned per-pair, applied to both"), through two reducers, one per source,
  shared by the pairs.
- The pairs go through the shared agent one after the other (as in the notes), so
  BatchNorm statistics are per pair, never mixed across pairs.

Parameter counts measured at the defaults (D=128, S=50, hidden 512/256, P=3):

- ``WindowSelector``: 6,689,295. The notes say 3.2M, but the MLP they give
  (2·128·50 = 12,800 → 512 → 256 → 15) has 6.69M; the MLP is built as given.
- ``TemporalCompressor``: 0.
- ``TonalityReducer``: 17,792 each, 35,584 for two (notes: 0.1M each).
- ``CompositionalCreativeAgent`` (shared): 14,565,638.
- ``AdaptiveWindowCreativeAgent``: 21,290,517 in all.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from jingle.core.config import config_from_dict, fail, require_int
from jingle.models.compositional import CompositionalConfig, CompositionalCreativeAgent, CompositionalOutput

SELECTION_OUTPUTS = ("start_input", "start_target", "ratio_input", "ratio_target", "tonality_strength")

# Logit that puts a sigmoid 0.25 % from its bound: near enough to "at the start"/"no
# compression", far enough from saturation that a gradient still gets through.
EDGE_LOGIT = 6.0


@dataclass(frozen=True)
class AdaptiveWindowConfig:
    """Hyper-parameters of the adaptive window agent.

    Attributes:
        latent_dim: D, channels of the codec latents.
        window_frames: W, frames of each output window (seconds × frame rate).
        num_pairs: P, window pairs predicted and composed.
        pooled_steps: S, time steps the selector pools each source to.
        selector_hidden_dims: hidden widths of the selector's MLP.
        max_ratio: largest compression ratio (the smallest is 1.0).
        initial_strength: tonality strength at initialisation, in (0, 1).
        tonality_kernel_size: kernel of the reducer's depthwise convolution (odd).
        compositional: config of the shared compositional agent (a dict is accepted and
            converted, so that ``from_dict`` of a JSON config works).
    """

    latent_dim: int = 128
    window_frames: int = 1200
    num_pairs: int = 3
    pooled_steps: int = 50
    selector_hidden_dims: tuple[int, ...] = (512, 256)
    max_ratio: float = 1.5
    initial_strength: float = 0.5
    tonality_kernel_size: int = 7
    compositional: CompositionalConfig = field(default_factory=CompositionalConfig)

    def __post_init__(self) -> None:
        # Frozen: normalise JSON-shaped values (list, dict) with object.__setattr__.
        if isinstance(self.compositional, Mapping):
            object.__setattr__(self, "compositional", CompositionalConfig.from_dict(self.compositional))
        if not isinstance(self.compositional, CompositionalConfig):
            fail("compositional", f"must be a CompositionalConfig or a dict, got {self.compositional!r}")
        if isinstance(self.selector_hidden_dims, (list, tuple)):
            object.__setattr__(self, "selector_hidden_dims", tuple(self.selector_hidden_dims))
        else:
            fail("selector_hidden_dims", f"must be a list of widths, got {self.selector_hidden_dims!r}")
        for name in ("latent_dim", "window_frames", "num_pairs", "pooled_steps", "tonality_kernel_size"):
            require_int(name, getattr(self, name), minimum=1)
        if not self.selector_hidden_dims or any(not isinstance(w, int) or w <= 0 for w in self.selector_hidden_dims):
            fail("selector_hidden_dims", f"must be positive integers, got {list(self.selector_hidden_dims)}")
        if self.tonality_kernel_size % 2 == 0:
            fail("tonality_kernel_size", f"must be odd to keep the frame count, got {self.tonality_kernel_size}")
        if not self.max_ratio >= 1.0:
            fail("max_ratio", f"must be at least 1.0, got {self.max_ratio}")
        if not 0.0 < self.initial_strength < 1.0:
            fail("initial_strength", f"must be in (0, 1) (a sigmoid's range), got {self.initial_strength}")
        if self.compositional.latent_dim != self.latent_dim:
            fail("compositional.latent_dim",
                f"({self.compositional.latent_dim}) must equal latent_dim ({self.latent_dim})"
            )

    @property
    def min_source_frames(self) -> int:
        """Fewest frames an input or target needs: the longest window, ``W · max_ratio``."""
        # The epsilon keeps float noise (20 * 1.1 = 22.000000000000004) from adding a frame.
        return math.ceil(self.window_frames * self.max_ratio - 1e-9)

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["selector_hidden_dims"] = list(self.selector_hidden_dims)
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> AdaptiveWindowConfig:
        return config_from_dict(cls, values)


@dataclass
class WindowSelection:
    """What the ``WindowSelector`` predicted, each [B, P].

    Attributes:
        start_input, start_target: first source frame of each window (fractional).
        ratio_input, ratio_target: compression ratios in [1, max_ratio].
        tonality_strength: strength of both reducers for the pair, in [0, 1].
    """

    start_input: torch.Tensor
    start_target: torch.Tensor
    ratio_input: torch.Tensor
    ratio_target: torch.Tensor
    tonality_strength: torch.Tensor

    def pair_summary(self) -> list[dict[str, float]]:
        """Batch means per pair, ``[{"start_input_mean": …, …}, …]``, as in the notes' logs."""
        means = {name: getattr(self, name).detach().float().mean(dim=0).tolist() for name in SELECTION_OUTPUTS}
        pairs = len(means[SELECTION_OUTPUTS[0]])
        return [{f"{name}_mean": means[name][p] for name in SELECTION_OUTPUTS} for p in range(pairs)]


class WindowSelector(nn.Module):
    """Predicts the windows of every pair from the time-pooled input and target.

    Each source is average-pooled to S steps; the two are flattened and passed through an
    MLP (2·D·S → hidden… → 5·P, ReLU) whose outputs are mapped by sigmoids into the ranges
    of ``WindowSelection``. [B, D, T_in], [B, D, T_tgt] -> ``WindowSelection``.
    """

    def __init__(
        self,
        *,
        latent_dim: int,
        window_frames: int,
        num_pairs: int,
        pooled_steps: int,
        hidden_dims: tuple[int, ...],
        max_ratio: float,
        initial_strength: float,
    ) -> None:
        super().__init__()
        self.window_frames = window_frames
        self.num_pairs = num_pairs
        self.pooled_steps = pooled_steps
        self.max_ratio = max_ratio
        widths = [2 * latent_dim * pooled_steps, *hidden_dims]
        layers: list[nn.Module] = []
        for width_in, width_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        self.hidden = nn.Sequential(*layers)
        self.head = nn.Linear(widths[-1], len(SELECTION_OUTPUTS) * num_pairs)
        self._initialise_head(initial_strength)

    def _initialise_head(self, initial_strength: float) -> None:
        """Zero weights, so every example starts from the biases: spread starts, ratio ≈ 1."""
        nn.init.zeros_(self.head.weight)
        start_fraction = torch.linspace(0.0, 1.0, self.num_pairs) if self.num_pairs > 1 else torch.tensor([0.5])
        edge = torch.sigmoid(torch.tensor(EDGE_LOGIT)).item()
        start_logit = torch.logit(start_fraction.clamp(1.0 - edge, edge))  # [P]
        bias = torch.empty(self.num_pairs, len(SELECTION_OUTPUTS))  # [P, 5]
        bias[:, 0] = start_logit
        bias[:, 1] = start_logit
        bias[:, 2] = -EDGE_LOGIT
        bias[:, 3] = -EDGE_LOGIT
        bias[:, 4] = math.log(initial_strength / (1.0 - initial_strength))
        with torch.no_grad():
            self.head.bias.copy_(bias.flatten())

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> WindowSelection:
        pooled = torch.cat(
            [F.adaptive_avg_pool1d(input, self.pooled_steps), F.adaptive_avg_pool1d(target, self.pooled_steps)], dim=1
        )  # [B, 2D, S]
        raw = self.head(self.hidden(pooled.flatten(1)))  # [B, 5P]
        raw = raw.view(raw.shape[0], self.num_pairs, len(SELECTION_OUTPUTS))  # [B, P, 5]
        ratio_input = 1.0 + (self.max_ratio - 1.0) * torch.sigmoid(raw[..., 2])  # [B, P]
        ratio_target = 1.0 + (self.max_ratio - 1.0) * torch.sigmoid(raw[..., 3])  # [B, P]
        # The start range shrinks with the ratio so that W·r source frames fit after it.
        start_input = torch.sigmoid(raw[..., 0]) * (input.shape[2] - self.window_frames * ratio_input)  # [B, P]
        start_target = torch.sigmoid(raw[..., 1]) * (target.shape[2] - self.window_frames * ratio_target)  # [B, P]
        return WindowSelection(
            start_input=start_input,
            start_target=start_target,
            ratio_input=ratio_input,
            ratio_target=ratio_target,
            tonality_strength=torch.sigmoid(raw[..., 4]),
        )


class TemporalCompressor(nn.Module):
    """Cuts out and compresses a window in one differentiable resampling (no parameters).

    Output frame j is the source at fractional frame ``start + j·ratio``, linearly
    interpolated (``grid_sample``), so gradients reach ``start`` and ``ratio``. Ratio 1 at
    an integer start is plain slicing; ratio r plays the source r times faster. There is
    no low-pass filter before the decimation: at r ≤ 1.5 on latent frames the aliasing is
    slight, and the notes' ``F.interpolate`` has none either.

    [B, D, T], start [B], ratio [B] -> [B, D, W].
    """

    def forward(self, source: torch.Tensor, start: torch.Tensor, ratio: torch.Tensor, *, frames: int) -> torch.Tensor:
        if source.dim() != 3 or source.shape[2] < 2:
            raise ValueError(f"source must be [B, D, T] with T >= 2, got {tuple(source.shape)}")
        batch, length = source.shape[0], source.shape[2]
        if start.shape != (batch,) or ratio.shape != (batch,):
            raise ValueError(f"start and ratio must be [{batch}], got {tuple(start.shape)} and {tuple(ratio.shape)}")
        # Positions in float32 even under bf16/fp16: half precision cannot address frame
        # 1000 to better than several frames.
        steps = torch.arange(frames, device=source.device, dtype=torch.float32)  # [W]
        positions = start.float()[:, None] + steps[None, :] * ratio.float()[:, None]  # [B, W]
        x = positions * (2.0 / (length - 1)) - 1.0  # [B, W], align_corners=True: -1 is frame 0
        grid = torch.stack([x, torch.zeros_like(x)], dim=-1)[:, None]  # [B, 1, W, 2]
        window = F.grid_sample(
            source.float()[:, :, None, :], grid, mode="bilinear", padding_mode="border", align_corners=True
        )  # [B, D, 1, W]
        return window[:, :, 0].to(source.dtype)  # [B, D, W]


class TonalityReducer(nn.Module):
    """Learned harmonic reshaping of a window, mixed in by a per-example strength.

    ``g(x)``: depthwise Conv(k, groups=D) → pointwise Conv(1×1) → LayerNorm over channels.
    The output is ``x + α·g(x)``, which is the notes' ``(1 − α)·x + α·f(x)`` with
    ``f(x) = x + g(x)``. The LayerNorm's affine weight and bias start at zero, so g = 0 and
    the reducer is exactly the identity at initialisation, whatever α.

    At that exact identity ∂out/∂α = g(x) = 0: the strength is connected to the graph but
    its gradient is zero until g has moved away from zero (one optimiser step on the
    reducer, whose LayerNorm affine does receive gradient at once).

    [B, D, W], strength [B] -> [B, D, W].
    """

    def __init__(self, *, latent_dim: int, kernel_size: int = 7) -> None:
        super().__init__()
        self.depthwise = nn.Conv1d(latent_dim, latent_dim, kernel_size, padding=kernel_size // 2, groups=latent_dim)
        self.pointwise = nn.Conv1d(latent_dim, latent_dim, 1)
        self.norm = nn.LayerNorm(latent_dim)
        nn.init.zeros_(self.norm.weight)
        nn.init.zeros_(self.norm.bias)

    def transform(self, window: torch.Tensor) -> torch.Tensor:
        """g(x): [B, D, W] -> [B, D, W]."""
        hidden = self.pointwise(self.depthwise(window))  # [B, D, W]
        return self.norm(hidden.transpose(1, 2)).transpose(1, 2)  # [B, D, W]

    def forward(self, window: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
        if strength.shape != (window.shape[0],):
            raise ValueError(f"strength must be [{window.shape[0]}], got {tuple(strength.shape)}")
        return window + strength[:, None, None] * self.transform(window)


@dataclass
class AdaptiveWindowOutput:
    """Result of ``AdaptiveWindowCreativeAgent.forward``.

    Attributes:
        latents: P composed latents, each [B, D, W].
        input_windows, target_windows: P reduced windows each [B, D, W], the references
            the training losses compare each output with.
        pair_outputs: the shared agent's ``CompositionalOutput`` of every pair.
        pair_losses: [P], each pair's novelty loss.
        loss: scalar, the mean of ``pair_losses``.
        selection: the raw [B, P] predictions of the window selector.
    """

    latents: list[torch.Tensor]
    input_windows: list[torch.Tensor]
    target_windows: list[torch.Tensor]
    pair_outputs: list[CompositionalOutput]
    pair_losses: torch.Tensor
    loss: torch.Tensor
    selection: WindowSelection

    @property
    def metadata(self) -> dict[str, Any]:
        """The notes' metadata, ``{"pairs": [{"start_input_mean": …, …}, …]}`` (floats).

        A property, so that the host sync of turning tensors into floats happens only when
        something logs it; the raw tensors are in ``selection``.
        """
        return {"pairs": self.selection.pair_summary()}


class AdaptiveWindowCreativeAgent(nn.Module):
    """Window selection, compression, tonality reduction and composition over P pairs."""

    def __init__(self, config: AdaptiveWindowConfig) -> None:
        super().__init__()
        self.config = config
        self.window_selector = WindowSelector(
            latent_dim=config.latent_dim,
            window_frames=config.window_frames,
            num_pairs=config.num_pairs,
            pooled_steps=config.pooled_steps,
            hidden_dims=config.selector_hidden_dims,
            max_ratio=config.max_ratio,
            initial_strength=config.initial_strength,
        )
        self.compressor = TemporalCompressor()
        self.input_reducer = TonalityReducer(latent_dim=config.latent_dim, kernel_size=config.tonality_kernel_size)
        self.target_reducer = TonalityReducer(latent_dim=config.latent_dim, kernel_size=config.tonality_kernel_size)
        self.compositional_agent = CompositionalCreativeAgent(config.compositional)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> AdaptiveWindowOutput:
        """Compose every window pair of an input and a target.

        Args:
            input: [B, D, T_in], target: [B, D, T_tgt], each with at least
                ``config.min_source_frames`` frames.
        """
        config = self.config
        for name, latent in (("input", input), ("target", target)):
            if latent.dim() != 3 or latent.shape[1] != config.latent_dim:
                raise ValueError(f"{name} must be [B, {config.latent_dim}, T], got {tuple(latent.shape)}")
            if latent.shape[2] < config.min_source_frames:
                raise ValueError(
                    f"{name} has {latent.shape[2]} frames; a window of {config.window_frames} frames "
                    f"compressed up to {config.max_ratio}x needs at least {config.min_source_frames}"
                )
        if target.shape[0] != input.shape[0]:
            raise ValueError(f"input and target batch sizes differ: {input.shape[0]} and {target.shape[0]}")

        selection = self.window_selector(input, target)  # each [B, P]
        latents, input_windows, target_windows, pair_outputs = [], [], [], []
        for pair in range(config.num_pairs):
            strength = selection.tonality_strength[:, pair]  # [B]
            input_window = self.compressor(
                input, selection.start_input[:, pair], selection.ratio_input[:, pair], frames=config.window_frames
            )  # [B, D, W]
            target_window = self.compressor(
                target, selection.start_target[:, pair], selection.ratio_target[:, pair], frames=config.window_frames
            )  # [B, D, W]
            input_window = self.input_reducer(input_window, strength)
            target_window = self.target_reducer(target_window, strength)
            pair_output = self.compositional_agent(input_window, target_window)
            latents.append(pair_output.latent)
            input_windows.append(input_window)
            target_windows.append(target_window)
            pair_outputs.append(pair_output)
        pair_losses = torch.stack([pair_output.novelty.loss for pair_output in pair_outputs])  # [P]
        return AdaptiveWindowOutput(
            latents=latents,
            input_windows=input_windows,
            target_windows=target_windows,
            pair_outputs=pair_outputs,
            pair_losses=pair_losses,
            loss=pair_losses.mean(),
            selection=selection,
        )
