"""Fusion inference: a fusion checkpoint read back as a model, and a pair of files fused
in chunks into OUT.wav, OUT.png and the OUT.json report. ``jingle fuse``
(``pipelines/fuse.py``) is its command line and Ray Data glue.

How a pair is run:

- Both files are read like preprocessing reads them (mono, resampled to the codec's rate)
  and cut to their common length. The model reads them in chunks of the training
  segment (``segment_seconds`` of the checkpoint, 16 s if it does not say), rounded to
  whole codec frames, one chunk per model call, so that memory does not grow with the
  file (an EnCodec encode holds ~700 bytes per sample).
- Compositional and single-stage models: consecutive chunks, the last zero-padded (as
  preprocessing's ``--tail pad`` does), a file shorter than a segment in one chunk of its
  own length; the outputs are joined and trimmed back to the common length.
- Adaptive window agent: each chunk must hold ``min_source_frames`` (its longest window);
  each gives one window of ``window_frames``, chosen by the pair mode: ``best`` (the pair
  with the lowest novelty loss, per chunk; OUT.json lists every pair's as
  ``pair_novelty``), ``mean`` (the average of the pair latents) or a pair index. The
  output is those windows joined, so it is shorter than the sources. A tail after the
  last whole chunk that still holds a window's source becomes one more chunk, the file's
  last segment; a shorter tail is not used.
- The joined latent is decoded in one call, so the decoder sees no seams of its own
  (Griffin-Lim keeps one phase estimate across chunk boundaries).
- A decoded latent is not bounded by full scale: before OUT.wav is written, the output is
  scaled down by one gain when its peak passes 0.99 (``datasets.audio.limit_peak``), and
  OUT.json records ``output_peak`` (as decoded) and ``output_gain``. The envelope
  correlations are measured before the gain, so they do not depend on it.

Shape letters: B batch, D latent channels, T frames, S samples.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jingle.datasets.audio import AudioError, limit_peak, probe, read_mono, write_wav
from jingle.models.cascade import CascadeConfig, CascadeFusionModel, FusionOutput
from jingle.training.checkpoints import CheckpointError, check_codec, load_trained
from jingle.models.codecs import Codec, build_codec
from jingle.models.novelty import NoveltyTerms
from jingle.training.losses import ENVELOPE_PARTS, envelope, pearson
from jingle.pipelines.figures import fusion_figure
from jingle.pipelines.tasks import get_task

DEFAULT_SEGMENT_SECONDS = 16.0  # the preprocessing default, for checkpoints that do not say
PAIR_MODES = ("best", "mean")

PairMode = str | int  # "best", "mean" or a pair index


def pairs_per_chunk(config: CascadeConfig) -> int:
    """Outputs the model writes per chunk: the adaptive agent's pairs, else one."""
    return config.adaptive_window.num_pairs if config.agent == "adaptive_window" else 1


def check_pair_mode(pair_mode: PairMode, config: CascadeConfig) -> None:
    """Raise ``ValueError`` for a mode that ``config``'s model cannot honour."""
    if isinstance(pair_mode, bool) or not (pair_mode in PAIR_MODES or isinstance(pair_mode, int)):
        raise ValueError(f"pair mode must be one of {PAIR_MODES} or a pair index, got {pair_mode!r}")
    pairs = pairs_per_chunk(config)
    if isinstance(pair_mode, int) and not 0 <= pair_mode < pairs:
        raise ValueError(f"--pair {pair_mode} is out of range: this {config.agent} model writes {pairs} pair(s) per chunk (0 to {pairs - 1})")


# ------------------------------------------------------------------ the model


@dataclass(frozen=True)
class FusionCheckpoint:
    """A fusion model ready for inference, with the codec it was trained on."""

    model: CascadeFusionModel
    codec: Codec
    path: str
    step: int
    segment_seconds: float

    @property
    def provenance(self) -> dict[str, Any]:
        return {"checkpoint": self.path, "step": self.step}


def load_fusion_checkpoint(
    checkpoint: str | os.PathLike,
    *,
    codec_checkpoint: str | os.PathLike | None = None,
    codec_state: Mapping[str, torch.Tensor] | None = None,
    device: str = "cpu",
) -> FusionCheckpoint:
    """Rebuild the model of a checkpoint, in eval mode on ``device``, with its codec.

    Args:
        checkpoint: a checkpoint directory or its ``state.pt``.
        codec_checkpoint: EnCodec weights file (EnCodec checkpoints only).
        codec_state: EnCodec weights already in memory (a Ray worker's); wins over the file.
    Raises:
        CheckpointError: missing, corrupt, of another kind, trained on another codec, a
            stored config that no longer validates, or weights that do not fit it.
        CodecUnavailable: the EnCodec weights cannot be found.
    """
    task = get_task("fusion")
    trained = load_trained(checkpoint, kind=task.name, config_class=task.config_class, build_model=task.build_model, device=device)
    state = trained.state
    # the codec is the one the checkpoint names, rebuilt here; its id must match the stored one
    codec_name = state.codec.get("name")
    if not isinstance(codec_name, str):
        raise CheckpointError(f"checkpoint {checkpoint} does not name its codec")
    codec = build_codec(codec_name, checkpoint=codec_checkpoint, state=codec_state)
    check_codec(checkpoint, state.codec, codec.id)
    return FusionCheckpoint(
        model=trained.model,
        codec=codec.to(device).eval(),
        path=trained.checkpoint,
        step=int(state.step),
        segment_seconds=float(state.data.get("segment_seconds") or DEFAULT_SEGMENT_SECONDS),
    )


# ------------------------------------------------------------------ one pair


@dataclass(frozen=True)
class Chunking:
    """Where the model reads a pair: chunks of ``samples`` samples starting at ``starts``."""

    starts: list[int]
    samples: int


def plan_chunks(config: CascadeConfig, codec: Codec, num_samples: int, segment_seconds: float) -> Chunking:
    """Cut ``num_samples`` of a pair into model chunks (see the module docstring).

    Raises:
        AudioError: the pair is shorter than the model needs (the message gives both).
    """
    hop = codec.hop_length
    segment_frames = codec.frames_for_seconds(segment_seconds)
    if config.agent == "adaptive_window":
        source_frames = config.adaptive_window.min_source_frames
        needed = source_frames * hop
        _check_length(num_samples, needed, codec.sample_rate, f"its adaptive window of {config.adaptive_window.window_frames} frames compressed up to {config.adaptive_window.max_ratio:g}x")
        samples = min(max(segment_frames, source_frames), num_samples // hop) * hop
        starts = list(range(0, num_samples - samples + 1, samples))
        if num_samples - (starts[-1] + samples) >= needed:
            starts.append(num_samples - samples)
        return Chunking(starts, samples)
    # the envelope correlations need ENVELOPE_PARTS samples; the model needs a frame
    _check_length(num_samples, max(hop, ENVELOPE_PARTS), codec.sample_rate, "one codec frame")
    samples = min(segment_frames, math.ceil(num_samples / hop)) * hop
    return Chunking(list(range(0, num_samples, samples)), samples)


def _check_length(num_samples: int, needed: int, sample_rate: int, why: str) -> None:
    if num_samples < needed:
        raise AudioError(
            f"input and target overlap for {num_samples / sample_rate:.2f} s, "
            f"the model needs at least {needed / sample_rate:.2f} s ({why})"
        )


@dataclass
class ChunkResult:
    """What one chunk contributed: its output latent and the numbers reported for it."""

    latent: torch.Tensor  # [1, D, T]
    novelty: NoveltyTerms
    component_weights: dict[str, float]
    window_metadata: dict | None  # the adaptive agent's windows, and the pair used


def select_output(result: FusionOutput, pair_mode: PairMode) -> tuple[torch.Tensor, NoveltyTerms, int | str]:
    """One latent out of a chunk's outputs (the notes' inference options A, B, C).

    ``"mean"`` averages the pair latents; its novelty is the mean of the pairs' (each pair
    has its own reference windows, so the average latent has no single reference).
    """
    if pair_mode == "mean":
        return torch.stack(result.outputs).mean(dim=0), result.novelty_mean, "mean"  # [B, D, T]
    if pair_mode == "best":
        # batch-level, as the novelty terms are batch means; a chunk is a batch of one
        index = int(torch.argmin(torch.stack([terms.loss for terms in result.novelty])))
    else:
        index = int(pair_mode)
    return result.outputs[index], result.novelty[index], index


def run_chunks(
    model: CascadeFusionModel,
    codec: Codec,
    input_audio: np.ndarray,
    target_audio: np.ndarray,
    chunking: Chunking,
    pair_mode: PairMode,
    device: str,
) -> list[ChunkResult]:
    """Encode and fuse each chunk of the two [S] waveforms, one model call per chunk."""
    results = []
    for start in chunking.starts:
        pair = np.zeros((2, chunking.samples), dtype=np.float32)  # [2, S], zero-padded past the end
        for row, audio in enumerate((input_audio, target_audio)):
            piece = audio[start : start + chunking.samples]
            pair[row, : len(piece)] = piece
        latents = codec.encode(torch.from_numpy(pair).to(device)[:, None])  # [2, D, T]
        result = model(latents[:1], latents[1:])
        latent, novelty, index = select_output(result, pair_mode)
        metadata = None
        if result.window_metadata is not None:
            metadata = {
                "start_seconds": start / codec.sample_rate,
                "pair_used": index,
                # what "best" chose by, so that a reader can see why a pair was kept
                "pair_novelty": [float(terms.loss) for terms in result.novelty],
                **result.window_metadata,
            }
        results.append(
            ChunkResult(
                latent=latent,
                novelty=novelty,
                component_weights=result.component_weights_by_name(),
                window_metadata=metadata,
            )
        )
    return results


def round_trip(codec: Codec, audio: np.ndarray, sample_rate: int, *, device: str | torch.device = "cpu") -> np.ndarray:
    """``audio`` ([S] mono at ``sample_rate``) encoded and decoded by ``codec``, back at
    ``sample_rate``: what any latent goes through on its way to audio (for the mel codec,
    Griffin-Lim's phase). [S]"""
    from jingle.datasets.resampling import resample

    at_codec_rate = resample(np.asarray(audio, dtype=np.float32), sample_rate, codec.sample_rate)
    with torch.inference_mode():
        wav = torch.from_numpy(at_codec_rate).to(device)[None, None]  # [1, 1, S]
        decoded = codec.decode(codec.encode(wav))[0, 0, : wav.shape[-1]].float().cpu().numpy()  # [S]
    return resample(decoded, codec.sample_rate, sample_rate)[: len(audio)]


@dataclass
class Fused:
    """One pair fused in memory: the decoded output as the model wrote it (before any
    peak limit) and what each chunk gave."""

    audio: np.ndarray  # [S] at the codec's rate
    chunks: list[ChunkResult]


def fuse_audio(
    model: CascadeFusionModel, codec: Codec, input_audio: np.ndarray, target_audio: np.ndarray, pair_mode: PairMode,
    segment_seconds: float, device: str,
) -> Fused:
    """Fuse two [S] waveforms at the codec's rate (cut to their common length) in chunks
    of ``segment_seconds`` and decode the joined latent in one call."""
    num_samples = min(len(input_audio), len(target_audio))
    input_audio, target_audio = input_audio[:num_samples], target_audio[:num_samples]
    chunking = plan_chunks(model.config, codec, num_samples, segment_seconds)
    with torch.inference_mode():
        chunks = run_chunks(model, codec, input_audio, target_audio, chunking, pair_mode, device)
        latent = torch.cat([chunk.latent for chunk in chunks], dim=-1)  # [1, D, T]
        decoded = codec.decode(latent)[0, 0].float().cpu().numpy()  # [S]
    if model.config.output_frames_from_input:
        decoded = decoded[:num_samples]  # the zero-padded tail of the last chunk
    return Fused(decoded, chunks)


def output_paths(output_path: str | os.PathLike) -> tuple[Path, Path, Path]:
    """OUT.wav -> (OUT.wav, OUT.png, OUT.json)."""
    wav = Path(output_path)
    return wav, wav.with_suffix(".png"), wav.with_suffix(".json")


def fuse_pair(
    model: CascadeFusionModel,
    codec: Codec,
    input_path: str | os.PathLike,
    target_path: str | os.PathLike,
    output_path: str | os.PathLike,
    pair_mode: PairMode,
    segment_seconds: float,
    device: str,
    *,
    provenance: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Fuse one pair of files and write OUT.wav, OUT.png and OUT.json.

    Args:
        model: an eval-mode fusion model on ``device``; codec: its codec, on ``device``.
        input_path, target_path: audio files (any rate and channel count).
        output_path: OUT.wav; OUT.png and OUT.json go beside it (folders are created).
        pair_mode: ``"best"``, ``"mean"`` or a pair index (adaptive agent; the other
            models write one output, pair 0).
        segment_seconds: the training segment, the chunk the model reads.
        provenance: merged into the report, e.g. ``{"checkpoint": path, "step": 7}``.
    Returns:
        The report written to OUT.json.
    Raises:
        AudioError: a file cannot be read, the pair is too short for the model, or the
            model's output holds NaN/Inf samples (nothing is written then).
        ValueError: ``pair_mode`` does not fit the model.
    """
    check_pair_mode(pair_mode, model.config)
    wav_path, png_path, json_path = output_paths(output_path)
    sources = {role: read_source(path, role, codec.sample_rate) for role, path in (("input", input_path), ("target", target_path))}
    num_samples = min(len(audio) for audio in sources.values())
    input_audio, target_audio = (sources[role][:num_samples] for role in ("input", "target"))
    fused = fuse_audio(model, codec, input_audio, target_audio, pair_mode, segment_seconds, device)
    decoded, chunks = fused.audio, fused.chunks
    try:
        limited = limit_peak(decoded)  # a decoded latent is not bounded by full scale
    except AudioError as error:
        raise AudioError(f"fused output of {input_path} and {target_path}: {error} (has the checkpoint diverged?)") from None
    output_audio = limited.audio  # [S], what OUT.wav holds

    write_wav(wav_path, output_audio, codec.sample_rate, subtype="FLOAT")
    fusion_figure(
        png_path,
        input_audio=input_audio,
        target_audio=target_audio,
        output_audio=output_audio,
        sample_rate=codec.sample_rate,
        title=f"{Path(input_path).name} + {Path(target_path).name} -> {wav_path.name}",
    )
    agent = model.config.agent
    report = {
        "input": str(input_path),
        "target": str(target_path),
        "output": str(wav_path),
        **dict(provenance or {}),
        "codec_id": codec.id,
        "sample_rate": codec.sample_rate,
        "agent": agent,
        "pair": pair_mode if agent == "adaptive_window" else None,
        "source_seconds": num_samples / codec.sample_rate,
        "duration_seconds": len(output_audio) / codec.sample_rate,
        "output_peak": limited.peak,  # max |sample| as decoded
        "output_gain": limited.gain,  # applied before writing OUT.wav, 1.0 unless the peak passed 0.99
        "segment_seconds": segment_seconds,
        "chunks": len(chunks),
        # of the audio as decoded: pearson's 1e-8 makes a correlation with a near-flat envelope
        # depend a little on scale, and the report describes the model, not the limiter
        "envelope_correlation": envelope_correlations(decoded, input_audio, target_audio),
        "novelty": {
            name: _finite(np.mean([float(getattr(chunk.novelty, name)) for chunk in chunks]))
            for name in ("similarity_to_input", "similarity_to_target", "loss")
        },
        "component_weights": _mean_weights([chunk.component_weights for chunk in chunks]),
        "window_metadata": _window_metadata(model.config, codec, chunks),
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    return report


def read_source(path: str | os.PathLike, role: str, sample_rate: int) -> np.ndarray:
    """One side of a pair, mono at ``sample_rate`` [S]; an error names the side."""
    try:
        return read_mono(path, sample_rate)
    except AudioError as error:
        raise AudioError(f"{role} {path}: {error}") from None


def probe_source(path: str | os.PathLike, role: str) -> None:
    """Check one side's header only (cheap), an error naming the side."""
    try:
        probe(path)
    except AudioError as error:
        raise AudioError(f"{role} {path}: {error}") from None


# ------------------------------------------------------------------ the report


def envelope_correlations(output_audio: np.ndarray, input_audio: np.ndarray, target_audio: np.ndarray) -> dict[str, float | None]:
    """Pearson correlation of the 250-part envelopes (note 003) of the output with each
    source, over the length the three share (the adaptive agent's output is shorter than
    its sources and not aligned with them in time, so there it is only indicative)."""
    length = min(len(output_audio), len(input_audio), len(target_audio))
    if length < ENVELOPE_PARTS:
        return {"input": None, "target": None}
    stacked = torch.from_numpy(np.stack([a[:length] for a in (output_audio, input_audio, target_audio)]).astype(np.float32))
    envelopes = envelope(stacked, parts=ENVELOPE_PARTS)  # [3, N]
    return {
        "input": _finite(pearson(envelopes[:1], envelopes[1:2])[0]),
        "target": _finite(pearson(envelopes[:1], envelopes[2:3])[0]),
    }


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None  # JSON has no NaN


def _mean_weights(per_chunk: list[dict[str, float]]) -> dict[str, float] | None:
    if not per_chunk or not per_chunk[0]:
        return None
    return {name: _finite(np.mean([weights[name] for weights in per_chunk])) for name in per_chunk[0]}


def _window_metadata(config: CascadeConfig, codec: Codec, chunks: list[ChunkResult]) -> dict | None:
    if config.agent != "adaptive_window":
        return None
    return {
        "window_frames": config.adaptive_window.window_frames,
        "frame_rate": codec.frame_rate,
        "note": "starts are frames within each chunk; chunks start at start_seconds of the sources",
        "chunks": [chunk.window_metadata for chunk in chunks],
    }
