"""Complementary masking of a fusion pair (design note 000).

The fusion model learns to blend when it sees the whole input and the whole target at
once. Complementary masking hides from each source what the other one keeps, so that the
model has to arrange the two: ``input_mask + target_mask == 1`` at every position, with
the cross-fades crossing (never dipping). It is applied in training only: the training
step masks a batch before the forward pass; validation and inference see whole latents.

Shape letters: B batch, D latent channels, T frames, S samples.

Strategies (parameters in frames, as the notes name them):

- ``none``: no masking; both masks are all ones (the one strategy not complementary).
- ``temporal``: alternating segments of ``temporal_segment`` frames. The input keeps
  segments 1, 3, 5... counted from 1 as in the notes (0-based 0, 2, 4...), the target
  segments 2, 4, 6.... At each boundary b inside the clip the input mask ramps linearly
  from 1 to 0 (or 0 to 1) over the ``fade_frames`` = F frames around it (ceil(F/2) before
  b, floor(F/2) from b on), reading ``1 - (k + 0.5) / F`` on the k-th of them, and the
  target mask is its complement. With a 10-frame fade the input mask reads 0.95, 0.85,
  ..., 0.05 on frames b-5 ... b+4: symmetric about the boundary, with no frame of the
  fade at 0 or 1. ``fade_frames=0`` gives hard switches.
- ``frequency``: the input keeps the low ``round(freq_split * D)`` channels, the target
  the rest. "Low" means low frequency for the ``mel`` codec (channel 0 is the lowest mel
  band); EnCodec's channels have no frequency order, so there it is a fixed channel split.
- ``spectral``: per example, a random ``round(channel_keep * D)`` channels go to the
  input and the others to the target, drawn from ``generator`` (the same seed gives the
  same masks).
- ``energy``: per example, the frames whose energy is strictly above the
  ``energy_threshold`` quantile (over T) go to the input, the rest to the target. Frame
  energy is the caller's ``energy`` [B, T] when given (a codec-aware caller should pass it:
  for log-mel latents the mean square of the latent is largest on *silent* frames, whose
  logs are most negative; ``frame_energy`` computes it from the waveform), else the mean
  square of the input latent over channels.
- ``hybrid``: temporal x frequency. The input mask is the temporal input mask times the
  low-band mask, and the target mask is one minus that: the target gets the high band
  everywhere and the low band on the input's off-segments.

Both split strategies leave at least one channel on each side when D >= 2.

Frame counts: the notes count frames at 150 frames/s; this project's codecs give 75
frames/s at 24 kHz, so the defaults are for 75 frames/s (``temporal_segment=75`` is 1 s,
``fade_frames=10`` is 133 ms). ``MaskingConfig.for_frame_rate`` builds a config from
seconds for any codec's ``frame_rate``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from jingle.core.config import fail, require_number

STRATEGIES = ("none", "temporal", "frequency", "spectral", "energy", "hybrid")

DEFAULT_FRAME_RATE = 75.0  # frames/s the frame defaults below are meant for
DEFAULT_TEMPORAL_SEGMENT = 75
DEFAULT_FADE_FRAMES = 10


@dataclass(frozen=True)
class MaskingConfig:
    """Which masking strategy to use and its parameters (frames and fractions).

    Attributes:
        strategy: one of ``STRATEGIES``; default ``none``. ``temporal`` is the notes'
            recommended first try, but it hides the target's chords in half the segments
            while the objective asks for them everywhere: a demo-size model trained with
            it settled on noise in the target's average spectrum (held-out harmony near
            0; bench/fusion_quality.py, docs/benchmarks.md: Fusion quality). Masking stays a setting
            to search (``jingle tune``).
        temporal_segment: frames per temporal segment (temporal, hybrid), >= 1.
        fade_frames: cross-fade length at each segment boundary, 0 <= fade < segment.
        freq_split: fraction of the channels (the low ones) kept by the input, in (0, 1).
        channel_keep: fraction of channels the input keeps under ``spectral``, in (0, 1).
        energy_threshold: quantile of frame energy above which a frame goes to the input,
            in (0, 1).
    """

    strategy: str = "none"
    temporal_segment: int = DEFAULT_TEMPORAL_SEGMENT
    fade_frames: int = DEFAULT_FADE_FRAMES
    freq_split: float = 0.3
    channel_keep: float = 0.5
    energy_threshold: float = 0.7

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            fail("strategy", f"must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        for name in ("temporal_segment", "fade_frames"):
            value = getattr(self, name)
            # bool is an int to Python, but a True segment length is a mistake, not 1
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name} must be a whole number of frames, got {value!r}")
        if self.temporal_segment < 1:
            fail("temporal_segment", f"must be at least 1 frame, got {self.temporal_segment!r}")
        if not 0 <= self.fade_frames < self.temporal_segment:
            fail("fade_frames", f"must be at least 0 and smaller than temporal_segment ({self.temporal_segment}), "
                                f"got {self.fade_frames!r}")
        for name in ("freq_split", "channel_keep", "energy_threshold"):  # fractions strictly between 0 and 1
            require_number(name, getattr(self, name), minimum=0, maximum=1, open_minimum=True, open_maximum=True)

    @classmethod
    def for_frame_rate(
        cls,
        frame_rate: float,
        *,
        strategy: str = "none",
        temporal_segment_seconds: float = DEFAULT_TEMPORAL_SEGMENT / DEFAULT_FRAME_RATE,
        fade_seconds: float = DEFAULT_FADE_FRAMES / DEFAULT_FRAME_RATE,
        freq_split: float = 0.3,
        channel_keep: float = 0.5,
        energy_threshold: float = 0.7,
    ) -> MaskingConfig:
        """A config whose segment and fade last the given seconds at ``frame_rate`` frames/s.

        Segment and fade are rounded to whole frames (the segment to at least one).
        """
        if not frame_rate > 0:
            raise ValueError(f"frame_rate must be positive, got {frame_rate!r}")
        if not temporal_segment_seconds > 0:
            raise ValueError(f"temporal_segment_seconds must be positive, got {temporal_segment_seconds!r}")
        if not fade_seconds >= 0:
            raise ValueError(f"fade_seconds must be at least 0, got {fade_seconds!r}")
        return cls(
            strategy=strategy,
            temporal_segment=max(1, round(temporal_segment_seconds * frame_rate)),
            fade_frames=round(fade_seconds * frame_rate),
            freq_split=freq_split,
            channel_keep=channel_keep,
            energy_threshold=energy_threshold,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> MaskingConfig:
        """The config from a plain dict (e.g. read from JSON); missing keys take defaults."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown masking config key {unknown[0]!r}; known keys: {', '.join(sorted(known))}")
        return cls(**values)


@dataclass
class MaskedPair:
    """The result of ``apply_complementary_mask``.

    Attributes:
        input: [B, D, T] masked input latents.
        target: [B, D, T] masked target latents.
        input_mask: [B, D, T] weights in [0, 1] applied to the input.
        target_mask: [B, D, T] weights applied to the target; ``1 - input_mask`` except
            under ``none``, where both are ones.
        description: one line for the logs, saying who keeps what.
    """

    input: torch.Tensor
    target: torch.Tensor
    input_mask: torch.Tensor
    target_mask: torch.Tensor
    description: str


def apply_complementary_mask(
    input: torch.Tensor,
    target: torch.Tensor,
    config: MaskingConfig,
    *,
    generator: torch.Generator | None = None,
    energy: torch.Tensor | None = None,
    fill_value: float | torch.Tensor = 0.0,
) -> MaskedPair:
    """Mask a batch of fusion pairs so that input and target keep complementary parts.

    Masks are built with tensor operations (no loop over frames) in float32 on the
    input's device, then cast to its dtype; the target mask is ``1 - input_mask`` in that
    dtype, so the two add up to exactly one there too.

    Args:
        input: [B, D, T] input latents (floating point).
        target: [B, D, T] target latents, same shape.
        config: the strategy and its parameters.
        generator: randomness for ``spectral`` (on any device); without one, torch's
            global generator is used and the masks cannot be repeated.
        energy: [B, T] frame energy of the input for ``energy``; default: the mean square
            of ``input`` over channels.
        fill_value: what a masked-out position becomes, broadcastable to [B, D, T]. 0
            suits EnCodec-like latents; for log-mel latents 0 is a loud bin, so pass the
            codec's latent of silence. A partly masked position is the linear mix
            ``fill + mask * (latent - fill)``.

    Returns:
        the masked latents, both masks ([B, D, T], input's device and dtype) and a
        one-line description.
    """
    _check_latents(input, target)
    channels = input.shape[1]
    if config.strategy == "none":
        ones = torch.ones_like(input)  # [B, D, T]
        # two tensors, so that a caller editing one mask in place leaves the other alone
        return MaskedPair(input, target, ones, ones.clone(), describe(config, channels))

    input_mask = _input_mask(input, config, generator=generator, energy=energy)  # [B, D, T] float32
    input_mask = input_mask.to(input.dtype).contiguous()
    target_mask = 1 - input_mask  # [B, D, T]
    # a float32 fill would promote float16 latents; keep the caller's dtype and device
    fill = torch.as_tensor(fill_value, dtype=input.dtype, device=input.device)
    return MaskedPair(
        input=_blend(input, input_mask, fill),
        target=_blend(target, target_mask, fill),
        input_mask=input_mask,
        target_mask=target_mask,
        description=describe(config, channels),
    )


def frame_energy(wav: torch.Tensor, hop_length: int) -> torch.Tensor:
    """Mean square of the waveform per latent frame, for the ``energy`` strategy.

    Frame t covers samples ``[t * hop_length, (t + 1) * hop_length)``; the last frame is
    zero-padded, so T = ceil(S / hop_length) as ``Codec.frames_for`` counts.

    Args:
        wav: [B, 1, S] waveform.
        hop_length: samples per latent frame (``codec.hop_length``).

    Returns:
        [B, T] float32 energy.
    """
    if wav.dim() != 3 or wav.shape[1] != 1:
        raise ValueError(f"frame_energy expects [B, 1, S] audio, got {tuple(wav.shape)}")
    if hop_length < 1:
        raise ValueError(f"hop_length must be at least 1, got {hop_length!r}")
    frames = math.ceil(wav.shape[-1] / hop_length)
    padded = F.pad(wav[:, 0].float(), (0, frames * hop_length - wav.shape[-1]))  # [B, T*hop]
    return padded.reshape(wav.shape[0], frames, hop_length).pow(2).mean(dim=-1)  # [B, T]


def describe(config: MaskingConfig, channels: int) -> str:
    """One line saying who keeps what under ``config`` for latents with ``channels`` channels."""
    segment, fade = config.temporal_segment, config.fade_frames
    low = _split_count(config.freq_split, channels)
    if config.strategy == "none":
        return "none: no masking, input and target are kept whole"
    if config.strategy == "temporal":
        return (
            f"temporal: alternating {segment}-frame segments (input on segments 1,3,5..., "
            f"target on 2,4,6...), {fade}-frame cross-fades"
        )
    if config.strategy == "frequency":
        return f"frequency: input keeps the low {low} of {channels} channels, target the high {channels - low}"
    if config.strategy == "spectral":
        kept = _split_count(config.channel_keep, channels)
        return f"spectral: input keeps a random {kept} of {channels} channels per example, target the other {channels - kept}"
    if config.strategy == "energy":
        return (
            f"energy: input keeps the frames above the {100 * config.energy_threshold:g}th percentile "
            "of frame energy, target the rest"
        )
    return (
        f"hybrid: input keeps the low {low} of {channels} channels on {segment}-frame segments 1,3,5... "
        f"({fade}-frame cross-fades), target the rest (high {channels - low} channels throughout, "
        "low ones on segments 2,4,6...)"
    )


# ------------------------------------------------------------------ mask builders


def _input_mask(
    input: torch.Tensor, config: MaskingConfig, *, generator: torch.Generator | None, energy: torch.Tensor | None
) -> torch.Tensor:
    """The input's mask for every strategy but ``none``: [B, D, T] float32."""
    batch, channels, frames = input.shape
    device = input.device
    if config.strategy == "temporal":
        mask = _temporal_input_mask(frames, config.temporal_segment, config.fade_frames, device)[None, None, :]  # [1, 1, T]
    elif config.strategy == "frequency":
        mask = _low_channels_mask(channels, config.freq_split, device)[None, :, None]  # [1, D, 1]
    elif config.strategy == "spectral":
        mask = _random_channels_mask(batch, channels, config.channel_keep, generator, device)[:, :, None]  # [B, D, 1]
    elif config.strategy == "energy":
        if energy is None:
            energy = input.float().pow(2).mean(dim=1)  # [B, T]
        elif energy.shape != (batch, frames):
            raise ValueError(f"energy must be [B, T] = {[batch, frames]}, got {list(energy.shape)}")
        mask = _loud_frames_mask(energy.to(device), config.energy_threshold)[:, None, :]  # [B, 1, T]
    elif config.strategy == "hybrid":
        over_time = _temporal_input_mask(frames, config.temporal_segment, config.fade_frames, device)  # [T]
        low_band = _low_channels_mask(channels, config.freq_split, device)  # [D]
        mask = (low_band[:, None] * over_time[None, :])[None]  # [1, D, T]
    else:  # MaskingConfig refuses other names; reaching here is a bug
        raise AssertionError(f"no mask builder for strategy {config.strategy!r}")
    return mask.expand(batch, channels, frames)  # [B, D, T]


def _temporal_input_mask(frames: int, segment: int, fade: int, device: torch.device) -> torch.Tensor:
    """1 on segments 0, 2, 4..., 0 on 1, 3, 5..., linear cross-fades around boundaries. [T]"""
    # Boundaries inside the clip are segment * k for k = 1..last; a fade needs a segment
    # on both sides, so none is put where the clip ends.
    last = (frames - 1) // segment
    if last < 1:
        return torch.ones(frames, device=device)
    centres = torch.arange(frames, device=device, dtype=torch.float32) + 0.5  # [T]
    # Each frame follows its nearest boundary: before the fade the mask holds the earlier
    # segment's value, after it the later one's, and the ramp mixes them in between.
    # fade < segment keeps every fade inside the half-segments around its boundary.
    # Clamping k to 1..last makes the frames before the first (after the last) boundary
    # read the first (last) segment's value.
    nearest = torch.round(centres / segment).clamp(1, last)  # [T]
    offset = centres - nearest * segment  # [T] frames past the boundary, at frame centres
    if fade == 0:
        progress = (offset > 0).float()  # [T]
    else:
        # the fade's k-th frame has its centre at offset k + 0.5 - ceil(fade / 2)
        progress = ((offset + math.ceil(fade / 2)) / fade).clamp(0, 1)  # [T]
    later_is_input = (nearest.long() % 2 == 0).float()  # [T] an even segment is the input's
    earlier_is_input = 1 - later_is_input
    return earlier_is_input + (later_is_input - earlier_is_input) * progress  # [T]


def _low_channels_mask(channels: int, fraction: float, device: torch.device) -> torch.Tensor:
    """1 on the low ``round(fraction * D)`` channels, 0 above. [D]"""
    low = _split_count(fraction, channels)
    return (torch.arange(channels, device=device) < low).float()  # [D]


def _random_channels_mask(
    batch: int, channels: int, fraction: float, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Per example, 1 on a random ``round(fraction * D)`` channels. [B, D]"""
    kept = _split_count(fraction, channels)
    # Draw where the generator lives so that a CPU generator serves GPU latents and the
    # same seed gives the same channels on every device.
    noise_device = generator.device if generator is not None else device
    noise = torch.rand(batch, channels, generator=generator, device=noise_device)  # [B, D]
    chosen = noise.argsort(dim=1)[:, :kept]  # [B, kept]
    mask = torch.zeros(batch, channels, device=noise_device).scatter_(1, chosen, 1.0)  # [B, D]
    return mask.to(device)


def _loud_frames_mask(energy: torch.Tensor, quantile: float) -> torch.Tensor:
    """Per example, 1 on the frames strictly above the ``quantile`` of ``energy``. [B, T]"""
    energy = energy.float()  # torch.quantile needs float32 or float64
    threshold = torch.quantile(energy, quantile, dim=1, keepdim=True)  # [B, 1]
    return (energy > threshold).float()  # [B, T]


# ------------------------------------------------------------------------ helpers


def _split_count(fraction: float, channels: int) -> int:
    """round(fraction * D), kept within 1..D-1 so that each side has a channel when D >= 2."""
    return min(max(round(fraction * channels), 1), channels - 1) if channels >= 2 else 0


def _blend(latents: torch.Tensor, mask: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    # lerp, not fill + mask * (latents - fill): it returns the latent bit for bit where
    # the mask is 1 and the fill where it is 0
    return torch.lerp(fill, latents, mask)  # [B, D, T]


def _check_latents(input: torch.Tensor, target: torch.Tensor) -> None:
    if input.dim() != 3:
        raise ValueError(f"input latents must be [B, D, T], got shape {tuple(input.shape)}")
    if input.shape != target.shape:
        raise ValueError(f"input and target latents must have the same shape, got {tuple(input.shape)} and {tuple(target.shape)}")
    if not input.is_floating_point():
        raise ValueError(f"latents must be floating point, got {input.dtype}")
