"""Pointer network: for every frame of an edit, the raw frame it came from.

From a raw recording and its edited version as log-mel frames (M bins, 50 frames/s), the
network gives for every edit frame a distribution over the raw frames; its argmax is the
edit frame's *pointer*, an index into ``[0, Tr)``. One class, two modes, chosen by the config:

- ``conform``: raw and a finished (possibly processed: gain, EQ, noise, compression) edit
  in, pointers out. The decoder reads the edit's own mel frames, with full self-attention.
- ``edit``: raw in, a new edit out, one pointer at a time. The decoder reads, causally, the
  raw recording at its previous pointers (teacher forcing in training) and also says where
  the edit ends (a stop logit per step: "this is the last frame").

This file holds the config, the modules and the network. Decoding a trained network
(conform log-probabilities, greedy or beam edit generation) is ``models/pointer_decoding.py``;
its loss ``training/pointer_loss.py``; the padded batch it is trained on
``datasets/pointer_sample.py`` (its tensors, as the arguments of ``forward``).

Shape letters: B batch, M mel bins, D model width, Tr raw frames, Te edit frames.

Choices where the brief leaves room:

- In edit mode the decoder input at step t is the raw *encoding* at pointer t−1, not the
  raw mel frame through a second front end: the encoding already knows where the frame
  sits in the recording and what surrounds it (what follows, how far the end is), which is
  what "point at the next frame" and "stop here" need, and it costs no parameters. Step 0
  reads a learned start vector.
- The continuation prior (edit mode) adds a learned, state-dependent bias to the logit of
  raw frame ``previous + 1``; at step 0 the previous pointer counts as −1, so the bias
  goes to raw frame 0 (the head can learn a negative bias where edits skip the start).
- Transformer layers are pre-norm with GELU and a final LayerNorm (the fusion blocks use
  PyTorch's post-norm): 4 + 4 layers with cross-attention train steadier that way.
- Padded frames are zeroed before every convolution, so the valid frames of a padded batch
  see exactly what they would see alone; attention masks the padding everywhere else.
- Padded raw positions get ``MASKED_LOGIT`` (−1e4), not −inf: finite in float16 and
  bfloat16, and ``exp`` of it is 0 in a float32 softmax, so no NaN from an all-masked row.
- Positions are sinusoidal (``models.blocks.sinusoidal_positions``), computed for the T at
  hand; ``max_frames`` is a sanity cap on input length, not a table size.

Parameter counts (``parameter_count``):

- ``pointer_config_full()``: conform 15,494,912, edit 14,604,418.
- ``pointer_config_mini()``: conform 1,225,984, edit 1,092,994.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from jingle.core.config import config_from_dict, fail, require_choice, require_int, require_number
from jingle.models.blocks import sinusoidal_positions

MODES = ("conform", "edit")
MASKED_LOGIT = -1.0e4
PADDED_POINTER = -1


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class PointerConfig:
    """Hyper-parameters of the pointer network (its loss's are ``PointerLossConfig``).

    Attributes:
        mode: ``"conform"`` (recover the pointers of a given edit) or ``"edit"`` (generate).
        n_mels: M, mel bins of the input frames.
        model_dim: D, width of every transformer layer.
        heads: attention heads (must divide ``model_dim``).
        encoder_layers, decoder_layers: transformer layers over raw and over the edit.
        feedforward_dim: hidden width of each feed-forward block.
        conv_kernel: odd kernel (frames) of the front-end convolutions.
        conv_layers: convolutions in each front end (the first maps M → D).
        dropout: dropout in the transformer layers.
        max_frames: longest raw recording or edit accepted (30,000 frames = 10 min).
    """

    mode: str = "conform"
    n_mels: int = 80
    model_dim: int = 384
    heads: int = 6
    encoder_layers: int = 4
    decoder_layers: int = 4
    feedforward_dim: int = 1024
    conv_kernel: int = 5
    conv_layers: int = 2
    dropout: float = 0.1
    max_frames: int = 30_000

    def __post_init__(self) -> None:
        require_choice("mode", self.mode, MODES)
        for name in ("n_mels", "model_dim", "heads", "encoder_layers", "decoder_layers", "feedforward_dim", "conv_kernel", "conv_layers", "max_frames"):
            require_int(name, getattr(self, name), minimum=1)
        if self.model_dim % self.heads:
            fail("model_dim", f"({self.model_dim}) must be divisible by heads ({self.heads})")
        if self.model_dim % 2:
            fail("model_dim", f"must be even for the sinusoidal positions, got {self.model_dim}")
        if self.conv_kernel % 2 == 0:
            fail("conv_kernel", f"must be odd so that convolutions keep T, got {self.conv_kernel}")
        require_number("dropout", self.dropout, minimum=0.0, maximum=1.0, open_maximum=True)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PointerConfig:
        return config_from_dict(cls, values)


def pointer_config_full(mode: str = "conform") -> PointerConfig:
    """The ~15M-parameter model of the notes (conform 15.49M, edit 14.60M)."""
    return PointerConfig(mode=mode)


def pointer_config_mini(mode: str = "conform") -> PointerConfig:
    """A ~1.1M-parameter model (conform 1.23M, edit 1.09M) that trains in minutes on two CPU cores."""
    return PointerConfig(mode=mode, model_dim=128, heads=4, encoder_layers=2, decoder_layers=2, feedforward_dim=512)


# --------------------------------------------------------------------------- modules


def frame_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """[B, T] bool, True on the first ``lengths[b]`` frames of each row."""
    return torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]


def add_positions(hidden: torch.Tensor) -> torch.Tensor:
    """``hidden`` [B, T, D] plus the sinusoidal positions of its T frames."""
    return hidden + sinusoidal_positions(hidden.shape[1], hidden.shape[2], device=hidden.device, dtype=hidden.dtype)


class ConvFrontEnd(nn.Module):
    """Conv1d stack over mel frames (M → D, then D → D), GELU after each; keeps T.

    [B, M, T] with a [B, T] validity mask -> [B, T, D].
    """

    def __init__(self, *, n_mels: int, model_dim: int, kernel: int, layers: int) -> None:
        super().__init__()
        channels = [n_mels] + [model_dim] * layers
        self.convolutions = nn.ModuleList(
            nn.Conv1d(channels[i], channels[i + 1], kernel, padding=kernel // 2) for i in range(layers)
        )

    def forward(self, mel: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        keep = mask[:, None, :].to(mel.dtype)  # [B, 1, T]
        hidden = mel
        for convolution in self.convolutions:
            # zeroed padding: a valid frame near the end sees what it would see unpadded
            hidden = F.gelu(convolution(hidden * keep))  # [B, D, T]
        return hidden.transpose(1, 2)  # [B, T, D]


def _encoder_layer(config: PointerConfig) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(
        d_model=config.model_dim,
        nhead=config.heads,
        dim_feedforward=config.feedforward_dim,
        dropout=config.dropout,
        activation="gelu",
        batch_first=True,
        norm_first=True,
    )


class RawEncoder(nn.Module):
    """Front end, sinusoidal positions and a transformer encoder over the raw recording.

    [B, M, Tr] with a [B, Tr] validity mask -> [B, Tr, D].
    """

    def __init__(self, config: PointerConfig) -> None:
        super().__init__()
        self.front_end = ConvFrontEnd(
            n_mels=config.n_mels, model_dim=config.model_dim, kernel=config.conv_kernel, layers=config.conv_layers
        )
        # nested tensors are a fast path for post-norm layers only
        self.encoder = nn.TransformerEncoder(
            _encoder_layer(config), num_layers=config.encoder_layers, norm=nn.LayerNorm(config.model_dim), enable_nested_tensor=False
        )

    def forward(self, raw_mel: torch.Tensor, raw_mask: torch.Tensor) -> torch.Tensor:
        hidden = add_positions(self.front_end(raw_mel, raw_mask))  # [B, Tr, D]
        return self.encoder(hidden, src_key_padding_mask=~raw_mask)  # [B, Tr, D]


class EditFrameInput(nn.Module):
    """Conform mode's decoder input: the edit's own mel frames through a front end.

    [B, M, Te] with a [B, Te] validity mask -> [B, Te, D].
    """

    def __init__(self, config: PointerConfig) -> None:
        super().__init__()
        self.front_end = ConvFrontEnd(
            n_mels=config.n_mels, model_dim=config.model_dim, kernel=config.conv_kernel, layers=config.conv_layers
        )

    def forward(self, edit_mel: torch.Tensor, edit_mask: torch.Tensor) -> torch.Tensor:
        return self.front_end(edit_mel, edit_mask)  # [B, Te, D]


def previous_pointers(pointers: torch.Tensor) -> torch.Tensor:
    """[B, Te] pointer t−1 at every step t; −1 at step 0 (and wherever padding precedes)."""
    start = torch.full_like(pointers[:, :1], PADDED_POINTER)
    return torch.cat([start, pointers[:, :-1]], dim=1)  # [B, Te]


class PreviousPointerInput(nn.Module):
    """Edit mode's decoder input: the raw encoding at the previous pointer, a learned start
    vector at step 0.

    Raw encoding [B, Tr, D] and previous pointers [B, Te] -> [B, Te, D].
    """

    def __init__(self, *, model_dim: int) -> None:
        super().__init__()
        self.start = nn.Parameter(torch.randn(model_dim) * 0.02)

    def forward(self, encoding: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        index = previous.clamp(min=0)[..., None].expand(-1, -1, encoding.shape[2])  # [B, Te, D]
        gathered = encoding.gather(1, index)  # [B, Te, D]
        return torch.where(previous[..., None] < 0, self.start.to(gathered.dtype), gathered)  # [B, Te, D]


class EditDecoder(nn.Module):
    """Transformer decoder over the edit: self-attention (full for conform, causal for edit)
    and cross-attention to the raw encoding.

    Inputs [B, Te, D] (positions are added here), raw encoding [B, Tr, D] -> [B, Te, D].
    """

    def __init__(self, config: PointerConfig, *, causal: bool) -> None:
        super().__init__()
        self.causal = causal
        layer = nn.TransformerDecoderLayer(
            d_model=config.model_dim,
            nhead=config.heads,
            dim_feedforward=config.feedforward_dim,
            dropout=config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.decoder = nn.TransformerDecoder(layer, num_layers=config.decoder_layers, norm=nn.LayerNorm(config.model_dim))

    def forward(
        self, inputs: torch.Tensor, edit_mask: torch.Tensor, encoding: torch.Tensor, raw_mask: torch.Tensor
    ) -> torch.Tensor:
        frames = inputs.shape[1]
        # a row with no edit frame (an empty edit) still lets every step see step 0, so that
        # its softmax has a key and stays finite; its outputs carry no loss
        padding = ~edit_mask
        padding[:, 0] = False
        causal_mask = None
        if self.causal:  # True above the diagonal: step t may not see steps after it
            causal_mask = torch.ones(frames, frames, dtype=torch.bool, device=inputs.device).triu(1)  # [Te, Te]
        return self.decoder(
            add_positions(inputs),
            encoding,
            tgt_mask=causal_mask,
            tgt_is_causal=self.causal,
            tgt_key_padding_mask=padding,
            memory_key_padding_mask=~raw_mask,
        )  # [B, Te, D]


class PointerAttention(nn.Module):
    """Pointer logits: scaled dot products of decoder-state queries with raw-encoding keys.

    Decoder state [B, Te, D], raw encoding [B, Tr, D], raw mask [B, Tr] -> [B, Te, Tr],
    ``MASKED_LOGIT`` at padded raw positions.
    """

    def __init__(self, *, model_dim: int) -> None:
        super().__init__()
        self.query = nn.Linear(model_dim, model_dim)
        self.key = nn.Linear(model_dim, model_dim)
        self.scale = 1.0 / math.sqrt(model_dim)

    def forward(self, state: torch.Tensor, encoding: torch.Tensor, raw_mask: torch.Tensor) -> torch.Tensor:
        logits = self.query(state) @ self.key(encoding).transpose(1, 2) * self.scale  # [B, Te, Tr]
        return logits.masked_fill(~raw_mask[:, None, :], MASKED_LOGIT)


class ContinuationPrior(nn.Module):
    """Edit mode: a learned, state-dependent bias on the logit of raw frame ``previous + 1``.

    Edits are mostly runs of consecutive frames; an attention query alone learns "the next
    position" slowly. The bias goes only where ``previous + 1`` is inside the raw length,
    so masked logits stay masked.

    Logits [B, Te, Tr], decoder state [B, Te, D], previous pointers [B, Te], raw lengths [B]
    -> [B, Te, Tr].
    """

    def __init__(self, *, model_dim: int) -> None:
        super().__init__()
        self.bias = nn.Linear(model_dim, 1)

    def forward(
        self, logits: torch.Tensor, state: torch.Tensor, previous: torch.Tensor, raw_lengths: torch.Tensor
    ) -> torch.Tensor:
        following = previous + 1  # [B, Te]
        inside = following < raw_lengths[:, None]  # [B, Te]
        bias = self.bias(state)[..., 0] * inside.to(state.dtype)  # [B, Te]
        index = following.clamp(max=logits.shape[2] - 1)[..., None]  # [B, Te, 1]
        return logits.scatter_add(2, index, bias[..., None].to(logits.dtype))  # [B, Te, Tr]


# --------------------------------------------------------------------------- the network


@dataclass
class PointerOutput:
    """Result of ``PointerNetwork.forward``.

    Attributes:
        logits: [B, Te, Tr], pointer logits, ``MASKED_LOGIT`` at padded raw positions.
        stop_logits: [B, Te], "this is the last frame" (edit mode), else None.
    """

    logits: torch.Tensor
    stop_logits: torch.Tensor | None = None


class PointerNetwork(nn.Module):
    """Raw encoder → edit decoder → pointer attention (+ continuation prior and stop head
    in edit mode). The mode's parts are chosen here, from the config."""

    def __init__(self, config: PointerConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = RawEncoder(config)
        editing = config.mode == "edit"
        self.decoder_input = PreviousPointerInput(model_dim=config.model_dim) if editing else EditFrameInput(config)
        self.decoder = EditDecoder(config, causal=editing)
        self.pointer_attention = PointerAttention(model_dim=config.model_dim)
        self.continuation = ContinuationPrior(model_dim=config.model_dim) if editing else None
        self.stop_head = nn.Linear(config.model_dim, 1) if editing else None

    def forward(
        self,
        raw_mel: torch.Tensor,
        raw_lengths: torch.Tensor,
        edit_mel: torch.Tensor | None,
        edit_lengths: torch.Tensor,
        pointers: torch.Tensor | None = None,
    ) -> PointerOutput:
        """Pointer logits for every edit frame.

        Args:
            raw_mel: [B, M, Tr] log-mel frames of the raw recordings, zero-padded.
            raw_lengths: [B] valid raw frames, 1..Tr.
            edit_mel: [B, M, Te] log-mel frames of the edits (conform mode; edit mode
                ignores them).
            edit_lengths: [B] valid edit frames, 0..Te (an empty edit gives logits that
                carry no loss).
            pointers: [B, Te] int64 true pointers, −1 on padding (edit mode: teacher
                forcing; conform mode ignores them).
        """
        raw_mask = self._check_inputs(raw_mel, raw_lengths, edit_mel, edit_lengths, pointers)
        encoding = self.encoder(raw_mel, raw_mask)  # [B, Tr, D]
        return self.decode(encoding, raw_lengths, edit_mel=edit_mel, edit_lengths=edit_lengths, pointers=pointers)

    def decode(
        self,
        encoding: torch.Tensor,
        raw_lengths: torch.Tensor,
        *,
        edit_mel: torch.Tensor | None,
        edit_lengths: torch.Tensor,
        pointers: torch.Tensor | None,
    ) -> PointerOutput:
        """The decoder half, on a raw encoding [B, Tr, D] computed once (``encoder``)."""
        raw_mask = frame_mask(raw_lengths, encoding.shape[1])  # [B, Tr]
        if self.config.mode == "conform":
            edit_mask = frame_mask(edit_lengths, edit_mel.shape[2])  # [B, Te]
            state = self.decoder(self.decoder_input(edit_mel, edit_mask), edit_mask, encoding, raw_mask)  # [B, Te, D]
            return PointerOutput(self.pointer_attention(state, encoding, raw_mask))
        edit_mask = frame_mask(edit_lengths, pointers.shape[1])  # [B, Te]
        previous = previous_pointers(pointers)  # [B, Te]
        state = self.decoder(self.decoder_input(encoding, previous), edit_mask, encoding, raw_mask)  # [B, Te, D]
        logits = self.continuation(self.pointer_attention(state, encoding, raw_mask), state, previous, raw_lengths)
        return PointerOutput(logits, self.stop_head(state)[..., 0])  # [B, Te, Tr], [B, Te]

    def _check_inputs(
        self,
        raw_mel: torch.Tensor,
        raw_lengths: torch.Tensor,
        edit_mel: torch.Tensor | None,
        edit_lengths: torch.Tensor,
        pointers: torch.Tensor | None,
    ) -> torch.Tensor:
        """The raw mask [B, Tr]; a ValueError names any input of the wrong shape or range."""
        config = self.config
        if raw_mel.dim() != 3 or raw_mel.shape[1] != config.n_mels:
            raise ValueError(f"raw_mel must be [B, {config.n_mels}, Tr], got {tuple(raw_mel.shape)}")
        batch, _, raw_frames = raw_mel.shape
        _check_lengths("raw_lengths", raw_lengths, batch, raw_frames, config.max_frames, shortest=1)
        if config.mode == "conform":
            if edit_mel is None:
                raise ValueError("conform mode needs edit_mel [B, M, Te]")
            if edit_mel.dim() != 3 or edit_mel.shape[:2] != (batch, config.n_mels):
                raise ValueError(f"edit_mel must be [{batch}, {config.n_mels}, Te], got {tuple(edit_mel.shape)}")
            edit_frames = edit_mel.shape[2]
        else:
            if pointers is None:
                raise ValueError("edit mode needs the true pointers [B, Te] (teacher forcing)")
            edit_frames = pointers.shape[-1]
        if pointers is not None and (pointers.shape != (batch, edit_frames) or pointers.dtype != torch.int64):
            raise ValueError(f"pointers must be int64 [{batch}, {edit_frames}], got {pointers.dtype} {tuple(pointers.shape)}")
        _check_lengths("edit_lengths", edit_lengths, batch, edit_frames, config.max_frames, shortest=0)
        if pointers is not None:
            valid = frame_mask(edit_lengths, edit_frames)  # [B, Te]
            outside = valid & ((pointers < 0) | (pointers >= raw_lengths[:, None]))
            if bool(outside.any()):
                raise ValueError(f"pointers must lie in [0, raw_lengths) on valid edit frames; {int(outside.sum())} do not")
        return frame_mask(raw_lengths, raw_frames)


def _check_lengths(name: str, lengths: torch.Tensor, batch: int, frames: int, max_frames: int, *, shortest: int) -> None:
    if frames > max_frames:
        raise ValueError(f"{frames} frames is more than max_frames ({max_frames}); cut the input or raise max_frames")
    if lengths.shape != (batch,):
        raise ValueError(f"{name} must be [{batch}], got {tuple(lengths.shape)}")
    if bool((lengths < shortest).any()) or bool((lengths > frames).any()):
        raise ValueError(f"{name} must lie in [{shortest}, {frames}], got {lengths.tolist()}")
