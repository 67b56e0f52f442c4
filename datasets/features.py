"""Log-mel features of the pointer network's recordings (raw and edit).

Shape letters: M mel bins, T frames, S samples.

Frame ``i`` of a recording is centred on sample ``i * hop_length`` (an STFT with
``center=True``), and a recording of S samples has ``ceil(S / hop_length)`` frames, so a
pointer (a raw frame index) converts to seconds as ``i / frame_rate`` and back. The
computation is the mel codec's (``models.codecs.MelCodec``): one definition of a log-mel
frame in the project.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
import torch

from jingle.core.config import config_from_dict, fail
from jingle.models.codecs import MelCodec, MelCodecConfig


@dataclass(frozen=True)
class MelFeatures:
    """Log-mel parameters; they travel in the shard manifest and the model checkpoint.

    Attributes:
        sample_rate: audio is resampled to this rate (Hz) before the STFT.
        n_fft: STFT size (samples).
        hop_length: samples between frames; ``frame_rate = sample_rate / hop_length``.
        n_mels: M, mel bins per frame.
        f_min, f_max: mel filterbank range in Hz (``f_max`` None: Nyquist).
    """

    sample_rate: int = 16_000
    n_fft: int = 1024
    hop_length: int = 320
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float | None = None

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.hop_length <= 0 or self.n_mels <= 0:
            raise ValueError(f"sample_rate, hop_length and n_mels must be positive, got {self}")
        if self.n_fft < self.hop_length:
            fail("n_fft", f"({self.n_fft}) must be at least hop_length ({self.hop_length})")

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    def frames_for(self, num_samples: int) -> int:
        return math.ceil(num_samples / self.hop_length)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "MelFeatures":
        return config_from_dict(cls, values)

    def log_mel(self, audio: np.ndarray) -> np.ndarray:
        """Mono audio at ``sample_rate`` [S] -> natural-log mel frames [M, T], float32."""
        if audio.ndim != 1:
            raise ValueError(f"log_mel expects mono audio [S], got shape {audio.shape}")
        if len(audio) == 0:
            return np.zeros((self.n_mels, 0), dtype=np.float32)
        with torch.inference_mode():
            mel = _codec(self).encode(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None, None])
        return mel[0].numpy()  # [M, T]


@lru_cache(maxsize=8)
def _codec(features: MelFeatures) -> MelCodec:
    return MelCodec(
        MelCodecConfig(
            sample_rate=features.sample_rate,
            hop_length=features.hop_length,
            n_fft=features.n_fft,
            n_mels=features.n_mels,
            f_min=features.f_min,
            f_max=features.f_max,
        )
    )
