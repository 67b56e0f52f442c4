"""Audio codecs: mono waveforms to latent frames and back.

Every codec has ``sample_rate``, ``frame_rate``, ``dim``, ``encode`` and ``decode``, and a
stable ``id`` (name, version and a hash of its configuration and weights) that is written
into every shard and checkpoint, so that latents of two codecs are never mixed.

Shape letters: B batch, D latent channels, T frames, S samples.

- ``mel``: weight-free log-mel spectrogram, D=128 at 75 frames/s at 24 kHz (hop 320),
  decoded with Griffin-Lim. Runs anywhere with nothing to download.
- ``encodec_24khz`` / ``encodec_48khz``: Meta's EnCodec from the ``encodec`` package.
  The latents are the encoder output before quantisation (D=128; 75 frames/s at 24 kHz,
  150 frames/s at 48 kHz). The 48 kHz model is stereo: mono input is fed to both
  channels and the decoded channels are averaged. Its per-second loudness normalisation
  (``EncodecModel.encode``) is not applied: the latents are the raw encoder output.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

import torch
import torchaudio
from torch import nn

from jingle.core.config import fail


class CodecUnavailable(RuntimeError):
    """A codec cannot be built (missing or wrong weights); the message says what to do."""


class Codec(nn.Module):
    """Base class. Subclasses set the attributes below in ``__init__``.

    Attributes:
        name: registry name, e.g. ``"mel"``.
        sample_rate: audio rate the codec expects, in Hz.
        hop_length: samples per latent frame.
        dim: latent channels D.
        differentiable_decode: whether ``decode`` passes gradients (EnCodec does;
            Griffin-Lim does not, so mel-domain losses work on the latents themselves).
        encode_bytes_per_sample: peak memory of ``encode`` per input sample under
            ``inference_mode`` on CPU (measured), so schedulers can reserve it.
    """

    name: str
    sample_rate: int
    hop_length: int
    dim: int
    differentiable_decode: bool
    encode_bytes_per_sample: int

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def id(self) -> str:
        return f"{self.name}-v{self._version()}-{_short_hash(self._fingerprint())}"

    def frames_for(self, num_samples: int) -> int:
        """Latent frames T that ``encode`` returns for ``num_samples`` samples."""
        return math.ceil(num_samples / self.hop_length)

    def frames_for_seconds(self, seconds: float) -> int:
        return self.frames_for(round(seconds * self.sample_rate))

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """[B, 1, S] float waveform at ``sample_rate`` -> [B, D, T] latents."""
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """[B, D, T] latents -> [B, 1, T * hop_length] waveform."""
        raise NotImplementedError

    def silence_latent(self) -> torch.Tensor:
        """[D] latent of silence: the encoding of one second of zeros, averaged over frames.

        What masked-out frames are set to: zero is not silence for every codec (for log-mel
        it is a loud bin; silence is log(log_floor)).
        """
        device = next(iter(self.buffers()), torch.zeros(())).device
        with torch.no_grad():
            return self.encode(torch.zeros(1, 1, self.sample_rate, device=device)).mean(dim=-1)[0]  # [D]

    def describe(self) -> dict:
        """Plain-JSON description written next to the codec id in manifests."""
        return {
            "name": self.name,
            "id": self.id,
            "sample_rate": self.sample_rate,
            "frame_rate": self.frame_rate,
            "hop_length": self.hop_length,
            "dim": self.dim,
        }

    def worker_state(self) -> Mapping[str, torch.Tensor] | None:
        """Weights to ship to remote workers (None for weight-free codecs)."""
        return None

    def _version(self) -> str:
        raise NotImplementedError

    def _fingerprint(self) -> str:
        raise NotImplementedError

    def _check_input(self, wav: torch.Tensor) -> None:
        if wav.dim() != 3 or wav.shape[1] != 1:
            raise ValueError(f"{self.name}.encode expects [B, 1, S] audio, got {tuple(wav.shape)}")


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


# --------------------------------------------------------------------------- mel


@dataclass(frozen=True)
class MelCodecConfig:
    sample_rate: int = 24_000
    hop_length: int = 320
    n_fft: int = 1024
    n_mels: int = 128
    f_min: float = 0.0
    f_max: float | None = None
    log_floor: float = 1e-5
    griffin_lim_iters: int = 32

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.hop_length <= 0:
            fail("sample_rate", f"and hop_length must be positive, got {self}")
        if self.n_fft < self.hop_length:
            fail("n_fft", f"({self.n_fft}) must be at least hop_length ({self.hop_length})")
        if self.n_mels <= 0 or self.log_floor <= 0:
            fail("n_mels", f"and log_floor must be positive, got {self}")


class MelCodec(Codec):
    """Natural-log magnitude mel spectrogram; decode by inverse mel + Griffin-Lim."""

    name = "mel"
    differentiable_decode = False
    encode_bytes_per_sample = 64

    def __init__(self, config: MelCodecConfig = MelCodecConfig()) -> None:
        super().__init__()
        self.config = config
        self.sample_rate = config.sample_rate
        self.hop_length = config.hop_length
        self.dim = config.n_mels
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=config.sample_rate,
            n_fft=config.n_fft,
            hop_length=config.hop_length,
            n_mels=config.n_mels,
            f_min=config.f_min,
            f_max=config.f_max,
            power=1.0,
            center=True,
        )
        self._griffin_lim: nn.Module | None = None
        self._inverse_mel: torch.Tensor | None = None

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        self._check_input(wav)
        frames = self.frames_for(wav.shape[-1])
        if wav.shape[-1] <= self.config.n_fft // 2:
            # the STFT's reflect padding needs more than n_fft / 2 samples
            wav = torch.nn.functional.pad(wav, (0, self.config.n_fft // 2 + 1 - wav.shape[-1]))
        mel = self.mel(wav[:, 0])  # [B, D, S // hop + 1]
        # center=True yields one frame more than EnCodec when S divides by the hop;
        # trim so both codecs give ceil(S / hop) frames for the same audio.
        return torch.log(mel[..., :frames].clamp_min(self.config.log_floor))  # [B, D, T]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.dim() != 3 or latents.shape[1] != self.dim:
            raise ValueError(f"mel.decode expects [B, {self.dim}, T], got {tuple(latents.shape)}")
        if self._griffin_lim is None:
            # Inverse mel by a pseudo-inverse computed once: least squares per call
            # (InverseMelScale) needs the CPU-only 'gelsd' driver for this rank-deficient
            # filterbank (low mel bands share STFT bins), so it would fail on CUDA.
            filterbank = self.mel.mel_scale.fb.detach().cpu().double()  # [F, D]
            self._inverse_mel = torch.linalg.pinv(filterbank.T).float().to(latents.device)  # [F, D]
            self._griffin_lim = torchaudio.transforms.GriffinLim(
                n_fft=self.config.n_fft, hop_length=self.config.hop_length, power=1.0, n_iter=self.config.griffin_lim_iters
            ).to(latents.device)
        magnitude = latents.float().exp()  # [B, D, T]
        spectrogram = torch.relu(self._inverse_mel.to(latents.device) @ magnitude)  # [B, F, T]
        wav = self._griffin_lim.to(latents.device)(spectrogram)  # [B, S']
        num_samples = latents.shape[-1] * self.hop_length
        wav = torch.nn.functional.pad(wav, (0, max(0, num_samples - wav.shape[-1])))
        return wav[:, None, :num_samples]  # [B, 1, S]

    def _version(self) -> str:
        return "1"

    def _fingerprint(self) -> str:
        return json.dumps(asdict(self.config), sort_keys=True)


# ----------------------------------------------------------------------- encodec

_ENCODEC_ROOT_URL = "https://dl.fbaipublicfiles.com/encodec/v0/"
_ENCODEC_CHECKPOINTS = {
    "encodec_24khz": "encodec_24khz-d7cc33bc.th",
    "encodec_48khz": "encodec_48khz-7e698e3e.th",
}
_DOWNLOAD_TIMEOUT_SECONDS = 30


def encodec_checkpoint_name(name: str) -> str:
    return _ENCODEC_CHECKPOINTS[name]


def encodec_hub_path(name: str) -> Path:
    """Where torch hub keeps (and ``encodec`` looks for) the pretrained weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / _ENCODEC_CHECKPOINTS[name]


def _bare_encodec(name: str) -> nn.Module:
    from encodec import EncodecModel

    builder = {
        "encodec_24khz": EncodecModel.encodec_model_24khz,
        "encodec_48khz": EncodecModel.encodec_model_48khz,
    }[name]
    return builder(pretrained=False)


def _missing_weights_message(name: str, reason: str) -> str:
    file = _ENCODEC_CHECKPOINTS[name]
    return (
        f"EnCodec weights for {name} are not available ({reason}): download "
        f"{_ENCODEC_ROOT_URL}{file} and put it at {encodec_hub_path(name)}, "
        f"or pass --codec-checkpoint PATH"
    )


def load_encodec_state(name: str, checkpoint: str | os.PathLike | None = None) -> dict:
    """Find the EnCodec weights: ``checkpoint``, else the torch hub cache, else a download.

    The download is skipped when ``JINGLE_OFFLINE=1``. Raises ``CodecUnavailable`` with
    one line saying which file to put where.
    """
    if name not in _ENCODEC_CHECKPOINTS:
        raise ValueError(f"unknown EnCodec model {name!r}; choose from {sorted(_ENCODEC_CHECKPOINTS)}")
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise CodecUnavailable(f"--codec-checkpoint {path} does not exist")
        return _read_state(path, name)
    cached = encodec_hub_path(name)
    if cached.is_file():
        return _read_state(cached, name)
    if os.environ.get("JINGLE_OFFLINE") == "1":
        raise CodecUnavailable(_missing_weights_message(name, "not in the torch hub cache, JINGLE_OFFLINE=1"))
    url = _ENCODEC_ROOT_URL + _ENCODEC_CHECKPOINTS[name]
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_SECONDS)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(cached) + ".part", progress=False)
        os.replace(str(cached) + ".part", cached)
    except Exception as error:  # any network failure means the same thing to the user
        raise CodecUnavailable(_missing_weights_message(name, f"download failed: {type(error).__name__}")) from None
    finally:
        socket.setdefaulttimeout(previous_timeout)
    return _read_state(cached, name)


def _read_state(path: Path, name: str) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CodecUnavailable(f"{path} is not a readable {name} checkpoint ({type(error).__name__})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CodecUnavailable(f"{path} does not hold a {name} state dict")
    return state


def _state_fingerprint(state: Mapping[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(key.encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


class EncodecCodec(Codec):
    """EnCodec encoder/decoder with frozen weights; latents are pre-quantisation."""

    differentiable_decode = True
    # SEANet's first layers keep 32-64 float32 channels at full rate: ~2.2 GB were
    # measured for 8 windows of 16 s at 24 kHz, on top of the process's own ~0.6 GB.
    encode_bytes_per_sample = 700

    def __init__(self, name: str, state: Mapping[str, torch.Tensor]) -> None:
        super().__init__()
        self.name = name
        model = _bare_encodec(name)
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            first = str(error).splitlines()[0]
            raise CodecUnavailable(f"the weights given are not an {name} checkpoint: {first}") from None
        model.eval().requires_grad_(False)
        self.model = model
        self.sample_rate = model.sample_rate
        self.hop_length = int(model.encoder.hop_length)
        self.dim = int(model.encoder.dimension)
        self.channels = model.channels
        self._weights_fingerprint = _state_fingerprint(state)

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        self._check_input(wav)
        if self.channels > 1:
            wav = wav.expand(-1, self.channels, -1)  # [B, C, S]
        return self.model.encoder(wav)  # [B, D, T]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        wav = self.model.decoder(latents)  # [B, C, S]
        return wav.mean(dim=1, keepdim=True)  # [B, 1, S]

    def worker_state(self) -> Mapping[str, torch.Tensor]:
        return self.model.state_dict()

    def _version(self) -> str:
        from importlib.metadata import version

        return version("encodec")

    def _fingerprint(self) -> str:
        return json.dumps({"name": self.name, "weights": self._weights_fingerprint}, sort_keys=True)


# ---------------------------------------------------------------------- registry

CODEC_NAMES = ("mel", "encodec_24khz", "encodec_48khz")


def build_codec(
    name: str,
    *,
    checkpoint: str | os.PathLike | None = None,
    state: Mapping[str, torch.Tensor] | None = None,
) -> Codec:
    """Build a codec by name.

    Args:
        name: one of ``CODEC_NAMES``.
        checkpoint: EnCodec weights file; ignored by ``mel``.
        state: EnCodec weights already in memory (e.g. shipped to a Ray worker); wins over
            ``checkpoint``.
    """
    if name == "mel":
        return MelCodec().eval()
    if name in _ENCODEC_CHECKPOINTS:
        if state is None:
            state = load_encodec_state(name, checkpoint)
        return EncodecCodec(name, state)
    raise ValueError(f"unknown codec {name!r}; choose from {', '.join(CODEC_NAMES)}")
