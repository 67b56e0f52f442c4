"""Spectral losses of the fusion model (``training/losses.py`` combines them).

``MultiResolutionSpectralLoss`` compares decoded audio (EnCodec's domain),
``MultiResolutionLogMelLoss`` log-mel frames (the mel codec's), ``LogMelFrames`` turns decoded
audio into such frames, and ``rms_difference`` is note 000's rms_in / rms_tgt.

Shape letters: B batch, D latent channels (mel bins for the mel codec), T frames, S samples.
"""

from __future__ import annotations

from typing import Sequence

import auraloss
import torch
import torch.nn.functional as F
from torch import nn


class MultiResolutionSpectralLoss(nn.Module):
    """Multi-resolution STFT loss on audio (auraloss: spectral convergence + log-magnitude L1).

    The default resolutions (FFT 512/1024/2048, hop a quarter of the FFT) span ~21 to
    ~85 ms windows at 24 kHz: short ones for drum transients, long ones for pitch.

    Args (forward):
        output, reference: [B, 1, S] waveforms.
    Returns:
        scalar loss, averaged over the resolutions.
    """

    def __init__(
        self,
        *,
        fft_sizes: Sequence[int] = (512, 1024, 2048),
        hop_sizes: Sequence[int] | None = None,
        win_lengths: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        fft_sizes = list(fft_sizes)
        hop_sizes = list(hop_sizes) if hop_sizes is not None else [size // 4 for size in fft_sizes]
        win_lengths = list(win_lengths) if win_lengths is not None else list(fft_sizes)
        if not fft_sizes or not (len(fft_sizes) == len(hop_sizes) == len(win_lengths)):
            raise ValueError(
                f"need as many hop sizes and window lengths as FFT sizes, got {fft_sizes}, {hop_sizes}, {win_lengths}"
            )
        self.stft_loss = auraloss.freq.MultiResolutionSTFTLoss(
            fft_sizes=fft_sizes, hop_sizes=hop_sizes, win_lengths=win_lengths
        )

    def forward(self, output: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return self.stft_loss(output, reference)


class MultiResolutionLogMelLoss(nn.Module):
    """L1 between log-mel frames at several time resolutions (the mel codec's spectral loss).

    The mel codec decodes with Griffin-Lim, which passes no gradient, so the spectral loss
    is taken on the frames themselves. They already are a log-magnitude spectrogram, so an
    L1 on them is the log-magnitude half of a multi-resolution STFT loss; the resolutions
    come from average-pooling the frames in time (by 1, 2, 4 frames: 13, 27, 53 ms at
    75 frames/s), which lets coarse scales reward the right spectral shape even where the
    fine timing differs.

    Args (forward):
        output, reference: [B, D, T] natural-log mel frames.
    Returns:
        scalar loss, averaged over the resolutions.
    """

    def __init__(self, *, pool_sizes: Sequence[int] = (1, 2, 4)) -> None:
        super().__init__()
        if not pool_sizes or any(size < 1 for size in pool_sizes):
            raise ValueError(f"pool_sizes must be positive frame counts, got {tuple(pool_sizes)}")
        self.pool_sizes = tuple(pool_sizes)

    def forward(self, output: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        losses = [
            # ceil_mode keeps the last, partial window (averaged over the frames it has)
            F.l1_loss(F.avg_pool1d(output, size, ceil_mode=True), F.avg_pool1d(reference, size, ceil_mode=True))
            for size in self.pool_sizes
        ]
        return torch.stack(losses).mean()


def rms_difference(output: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """sqrt(mean((output - reference)²)) over everything: note 000's rms_in / rms_tgt."""
    return torch.sqrt(F.mse_loss(output, reference))


class LogMelFrames(nn.Module):
    """Decoded audio as natural-log mel frames at ~75 frames/s, where the reconstruction
    term is taken in the audio domain (the mel codec's latents already are such frames).

    Args (forward):
        audio: [B, 1, S] waveform.
    Returns:
        [B, M, T] with M = ``mels``.
    """

    def __init__(self, sample_rate: int, *, mels: int = 64, frame_rate: int = 75) -> None:
        super().__init__()
        import torchaudio  # only the audio domain needs it

        hop = max(1, sample_rate // frame_rate)
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=4 * hop, hop_length=hop, n_mels=mels, power=1.0
        )

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return torch.log(self.mel(audio[:, 0]).clamp_min(1e-5))  # [B, M, T]
