"""Building blocks shared by the fusion model's modules.

Shape letters: B batch, C channels, T frames, E transformer width.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_positions(frames: int, width: int, *, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Sinusoidal positional encoding [T, E] (sin on even channels, cos on odd)."""
    position = torch.arange(frames, device=device, dtype=torch.float32).unsqueeze(1)  # [T, 1]
    frequency = torch.exp(
        torch.arange(0, width, 2, device=device, dtype=torch.float32) * (-math.log(10_000.0) / width)
    )  # [E/2]
    encoding = torch.zeros(frames, width, device=device, dtype=torch.float32)
    encoding[:, 0::2] = torch.sin(position * frequency)
    encoding[:, 1::2] = torch.cos(position * frequency)
    return encoding.to(dtype)  # [T, E]


class FrameTransformer(nn.Module):
    """Per-frame linear projection, sinusoidal positions, then a TransformerEncoder.

    [B, C, T] -> [B, T, E]; the caller adds its own output head.

    Args:
        in_channels: C.
        model_dim: E.
        heads, layers, feedforward_dim, dropout: the encoder layers'.
        norm_first: pre-norm layers (steadier for deep stacks) or PyTorch's post-norm.
        activation: ``"relu"`` or ``"gelu"`` inside the feed-forward blocks.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        model_dim: int,
        heads: int,
        layers: int,
        feedforward_dim: int,
        dropout: float,
        norm_first: bool = False,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.input_projection = nn.Linear(in_channels, model_dim)
        layer = nn.TransformerEncoderLayer(
            d_model=model_dim,
            nhead=heads,
            dim_feedforward=feedforward_dim,
            dropout=dropout,
            activation=activation,
            batch_first=True,
            norm_first=norm_first,
        )
        # enable_nested_tensor only speeds up padded batches; ours are never padded.
        self.encoder = nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        hidden = self.input_projection(frames.transpose(1, 2))  # [B, T, E]
        hidden = hidden + sinusoidal_positions(hidden.shape[1], hidden.shape[2], device=hidden.device, dtype=hidden.dtype)
        return self.encoder(hidden)  # [B, T, E]


def parameter_count(module: nn.Module) -> int:
    """Number of parameters of ``module`` (buffers such as BatchNorm statistics excluded)."""
    return sum(parameter.numel() for parameter in module.parameters())
