"""``jingle fuse``: fuse an input and a target WAV with a trained fusion model.

    python -m pipelines.fuse --checkpoint CKPT INPUT.wav TARGET.wav -o OUT.wav [--pair best|mean|N]
    python -m pipelines.fuse --checkpoint CKPT --batch PAIRS_DIR --out DIR

Writes OUT.wav (mono float at the codec's rate), OUT.png (envelopes and spectrograms of
input, target and output) and OUT.json (envelope correlations, novelty, component
weights, the adaptive agent's windows). ``--batch`` fuses every pair of a folder or
manifest through Ray Data into ``DIR/<pair_id>.wav/.png/.json``.

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
  each gives one window of ``window_frames``, chosen by ``--pair``: ``best`` (the pair
  with the lowest novelty loss, per chunk), ``mean`` (the average of the pair latents) or
  a pair index. The output is those windows joined, so it is shorter than the sources. A
  tail after the last whole chunk that still holds a window's source becomes one more
  chunk, the file's last segment; a shorter tail is not used.
- The joined latent is decoded in one call, so the decoder sees no seams of its own
  (Griffin-Lim keeps one phase estimate across chunk boundaries).

Shape letters: B batch, D latent channels, T frames, S samples.

``--batch`` runs on a cluster: the checkpoint, the pairs and ``--out`` must be on storage
every node reads at the same path (shared storage: NFS, a mounted bucket); codec weights
travel through the object store.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a file (ray submit): make the project importable
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import argparse
import json
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from datasets.audio import AudioError, probe, read_mono, write_wav
from datasets.pairs import InputError, discover_fusion_pairs
from models.cascade import CascadeConfig, CascadeFusionModel, FusionOutput, build_fusion_model
from models.checkpoints import CheckpointError, load_state
from models.codecs import Codec, build_codec
from models.fusion_config import FusionTrainConfig
from models.losses import ENVELOPE_PARTS, NoveltyTerms, envelope, pearson
from pipelines.common import EntryPoint, UsageError, add_common_arguments, local_device
from pipelines.figures import fusion_figure

PROG = "jingle fuse"
DEFAULT_SEGMENT_SECONDS = 16.0  # the preprocessing default, for checkpoints that do not say
PAIR_MODES = ("best", "mean")

PairMode = str | int  # "best", "mean" or a pair index


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="fusion checkpoint (a directory with state.pt, or the file)")
    parser.add_argument("input", nargs="?", metavar="INPUT.wav", help="the input (e.g. drums)")
    parser.add_argument("target", nargs="?", metavar="TARGET.wav", help="the target (e.g. piano)")
    parser.add_argument("-o", "--output", metavar="OUT.wav", help="fused audio; OUT.png and OUT.json are written beside it")
    parser.add_argument("--batch", metavar="PAIRS_DIR", help="fuse every pair of a folder (input/, target/) or CSV/JSONL manifest")
    parser.add_argument("--out", metavar="DIR", help="with --batch: folder for <pair_id>.wav/.png/.json")
    parser.add_argument("--codec-checkpoint", default=None, metavar="PATH", help="EnCodec weights file, for an EnCodec checkpoint (default: torch hub cache)")
    parser.add_argument(
        "--pair",
        type=parse_pair_mode,
        default="best",
        metavar="best|mean|N",
        help="adaptive window agent: which window pair to keep per chunk: best (lowest novelty loss), mean, or an index (default: best)",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="where the model runs (default: cuda if available)")
    parser.add_argument("--actors", type=int, default=None, metavar="N", help="with --batch: fusion actors at most (default: 1 per GPU, or CPUs/2)")
    add_common_arguments(parser)


def parse_pair_mode(text: str) -> PairMode:
    if text in PAIR_MODES:
        return text
    try:
        index = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be best, mean or a pair index, got {text!r}") from None
    if index < 0:
        raise argparse.ArgumentTypeError(f"a pair index must be 0 or more, got {index}")
    return index


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
        CheckpointError: missing, corrupt, of another kind, trained on another codec, or
            weights that do not fit the stored config.
        CodecUnavailable: the EnCodec weights cannot be found.
        ConfigError: the stored config is invalid.
    """
    state = load_state(checkpoint, kind="fusion")
    codec_name = state.codec.get("name")
    if not isinstance(codec_name, str):
        raise CheckpointError(f"checkpoint {checkpoint} does not name its codec")
    codec = build_codec(codec_name, checkpoint=codec_checkpoint, state=codec_state)
    if state.codec.get("id") != codec.id:
        # load_state owns the refusal and its wording; it reads the file only in this case
        load_state(checkpoint, kind="fusion", codec_id=codec.id)
    config = FusionTrainConfig.from_dict(state.config).model
    model = build_fusion_model(config)
    try:
        model.load_state_dict(state.model)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint {checkpoint}: the weights do not fit its model config ({first})") from None
    segment_seconds = float(state.data.get("segment_seconds") or DEFAULT_SEGMENT_SECONDS)
    return FusionCheckpoint(
        model=model.to(device).eval(),
        codec=codec.to(device).eval(),
        path=str(checkpoint),
        step=int(state.step),
        segment_seconds=segment_seconds,
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
            metadata = {"start_seconds": start / codec.sample_rate, "pair_used": index, **result.window_metadata}
        results.append(
            ChunkResult(
                latent=latent,
                novelty=novelty,
                component_weights=result.component_weights_by_name(),
                window_metadata=metadata,
            )
        )
    return results


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
        AudioError: a file cannot be read, or the pair is too short for the model.
        ValueError: ``pair_mode`` does not fit the model.
    """
    check_pair_mode(pair_mode, model.config)
    wav_path, png_path, json_path = output_paths(output_path)
    sources = {role: _read(path, role, codec.sample_rate) for role, path in (("input", input_path), ("target", target_path))}
    num_samples = min(len(audio) for audio in sources.values())
    input_audio, target_audio = (sources[role][:num_samples] for role in ("input", "target"))
    chunking = plan_chunks(model.config, codec, num_samples, segment_seconds)
    with torch.inference_mode():
        chunks = run_chunks(model, codec, input_audio, target_audio, chunking, pair_mode, device)
        latent = torch.cat([chunk.latent for chunk in chunks], dim=-1)  # [1, D, T]
        output_audio = codec.decode(latent)[0, 0].float().cpu().numpy()  # [S]
    if model.config.output_frames_from_input:
        output_audio = output_audio[:num_samples]  # the zero-padded tail of the last chunk

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
        "segment_seconds": segment_seconds,
        "chunks": len(chunks),
        "envelope_correlation": envelope_correlations(output_audio, input_audio, target_audio),
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


def _read(path: str | os.PathLike, role: str, sample_rate: int) -> np.ndarray:
    try:
        return read_mono(path, sample_rate)
    except AudioError as error:
        raise AudioError(f"{role} {path}: {error}") from None


def _probe(path: str | os.PathLike, role: str) -> None:
    try:
        probe(path)
    except AudioError as error:
        raise AudioError(f"{role} {path}: {error}") from None


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


# ------------------------------------------------------------------ command


def command(args: argparse.Namespace) -> int:
    _check_layout(args)
    if args.batch is not None:
        return run_batch(args)
    for role, path in (("input", args.input), ("target", args.target)):
        if Path(path).resolve() == Path(args.output).resolve():
            raise UsageError(f"-o {args.output} would overwrite the {role}: choose another output file")
        _probe(path, role)  # headers only: a wrong file name costs no model load
    device = local_device(args.device)
    loaded = load_fusion_checkpoint(args.checkpoint, codec_checkpoint=args.codec_checkpoint, device=device)
    try:
        check_pair_mode(args.pair, loaded.model.config)
    except ValueError as error:
        raise UsageError(str(error)) from None
    report = fuse_pair(
        loaded.model,
        loaded.codec,
        args.input,
        args.target,
        args.output,
        args.pair,
        loaded.segment_seconds,
        device,
        provenance=loaded.provenance,
    )
    wav_path, png_path, json_path = output_paths(args.output)
    correlation = report["envelope_correlation"]
    print(f"wrote {wav_path} ({report['duration_seconds']:.2f} s at {report['sample_rate']} Hz, {report['chunks']} chunk(s))")
    print(f"wrote {png_path}")
    print(f"wrote {json_path} (envelope correlation with input {_format(correlation['input'])}, target {_format(correlation['target'])})")
    return 0


def _format(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def _check_layout(args: argparse.Namespace) -> None:
    """One pair (INPUT.wav TARGET.wav -o OUT.wav) or --batch PAIRS_DIR --out DIR, not a mix."""
    if args.batch is not None:
        extra = [name for name, value in (("INPUT.wav", args.input), ("-o", args.output)) if value is not None]
        if extra:
            raise UsageError(f"--batch takes no {' or '.join(extra)}: use --batch PAIRS_DIR --out DIR")
        if args.out is None:
            raise UsageError("--batch needs --out DIR for the fused files")
        if args.actors is not None and args.actors < 1:
            raise UsageError(f"--actors must be at least 1, got {args.actors}")
        return
    if args.out is not None or args.actors is not None:
        raise UsageError("--out and --actors go with --batch PAIRS_DIR; for one pair use INPUT.wav TARGET.wav -o OUT.wav")
    if args.input is None or args.target is None or args.output is None:
        raise UsageError("give INPUT.wav TARGET.wav -o OUT.wav, or --batch PAIRS_DIR --out DIR")
    if Path(args.output).suffix.lower() not in (".wav", ".wave"):
        raise UsageError(f"-o {args.output} must end in .wav (OUT.png and OUT.json are written beside it)")


# ------------------------------------------------------------------ batch (Ray Data)


class Fuser:
    """Ray Data actor: loads the codec and model once, then fuses one pair per row.

    Each row is written to ``out_dir/<name>.wav/.png/.json`` by the actor itself; what
    comes back is one small row per pair (``pair_id``, ``status``: ``"ok"`` or the
    reason it failed), never audio.

    Args:
        checkpoint: the fusion checkpoint, at a path every node reads (shared storage).
        codec_id: the id the driver checked; a worker whose codec differs refuses.
        codec_state: ``[ObjectRef]`` of the EnCodec weights (None for weight-free codecs).
        out_dir: where the fused files go (shared storage).
        pair_mode: ``--pair``.
        threads: torch intra-op threads (CPU actors).
    """

    def __init__(self, *, checkpoint: str, codec_id: str, codec_state: list | None, out_dir: str, pair_mode: PairMode, threads: int) -> None:
        import ray

        torch.set_num_threads(max(1, threads))
        weights = ray.get(codec_state[0]) if codec_state else None
        self.device = "cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu"
        self.loaded = load_fusion_checkpoint(checkpoint, codec_state=weights, device=self.device)
        if self.loaded.codec.id != codec_id:
            raise RuntimeError(f"worker built codec {self.loaded.codec.id}, driver expected {codec_id}")
        self.out_dir = Path(out_dir)
        self.pair_mode = pair_mode

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        statuses = []
        for pair_id, input_path, target_path, name in zip(batch["pair_id"], batch["input_path"], batch["target_path"], batch["name"]):
            try:
                fuse_pair(
                    self.loaded.model,
                    self.loaded.codec,
                    str(input_path),
                    str(target_path),
                    self.out_dir / f"{name}.wav",
                    self.pair_mode,
                    self.loaded.segment_seconds,
                    self.device,
                    provenance={**self.loaded.provenance, "pair_id": str(pair_id)},
                )
                statuses.append("ok")
            except AudioError as error:  # a bad or short file fails its pair, not the run
                statuses.append(str(error))
        return {"pair_id": np.asarray(batch["pair_id"], dtype=object), "status": np.array(statuses, dtype=object)}


def output_name(pair_id: str) -> str:
    """A pair id as a relative file name inside --out (sub-folders kept, no escape)."""
    parts = [part for part in PurePosixPath(pair_id.replace("\\", "/")).parts if part not in ("/", ".", "..")]
    return "/".join(parts) or "pair"


def run_batch(args: argparse.Namespace) -> int:
    import ray

    from pipelines.common import init_ray

    try:
        found = discover_fusion_pairs(args.batch)  # before Ray: a wrong folder costs nothing
    except InputError as error:
        # discovery's messages name preprocessing's --pairs; here the folder is --batch
        raise InputError(str(error).replace("--pairs ", "--batch ", 1)) from None
    for reject in found.rejects:
        print(f"[fuse] skipped {reject.path}: {reject.reason}", file=sys.stderr)
    # the driver checks the checkpoint, codec and --pair once, before any worker starts
    loaded = load_fusion_checkpoint(args.checkpoint, codec_checkpoint=args.codec_checkpoint, device="cpu")
    try:
        check_pair_mode(args.pair, loaded.model.config)
    except ValueError as error:
        raise UsageError(str(error)) from None
    out_dir = Path(args.out).resolve()
    items, failed, names = [], {}, {}
    for pair in found.pairs:
        name = output_name(pair.pair_id)
        # absolute paths: a worker's working directory is not the driver's
        sources = [str(Path(pair.input_path).resolve()), str(Path(pair.target_path).resolve())]
        if name in names:
            failed[pair.pair_id] = f"same output name {name!r} as pair {names[name]!r}"
        elif str(out_dir / f"{name}.wav") in sources:
            failed[pair.pair_id] = f"{out_dir / name}.wav would overwrite a source: choose another --out"
        else:
            names[name] = pair.pair_id
            items.append({"pair_id": pair.pair_id, "input_path": sources[0], "target_path": sources[1], "name": name})
    if not items:
        raise InputError(f"--batch {args.batch}: no pairs to fuse ({len(found.rejects)} file(s) without a partner)")

    init_ray(args.num_cpus)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if args.device == "cuda" and not gpus:
        raise UsageError("--device cuda: the Ray cluster has no GPU; use --device cpu")
    use_gpus = gpus > 0 and args.device != "cpu"
    if use_gpus:
        threads, actors, remote_args = 2, args.actors or gpus, {"num_cpus": 1, "num_gpus": 1}
    else:
        # Two torch threads per actor but one logical CPU reserved: an actor asking for a
        # whole 2-CPU node would wait forever behind any other task on it.
        per_node = max(int(node["Resources"].get("CPU", 1)) for node in ray.nodes() if node["Alive"])
        threads = min(2, per_node)
        actors = args.actors or max(1, int(ray.cluster_resources().get("CPU", 1)) // threads)
        remote_args = {"num_cpus": 1}
    weights = loaded.codec.worker_state()
    codec_state = [ray.put(dict(weights))] if weights is not None else None
    dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        Fuser,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=min(actors, len(items))),
        fn_constructor_kwargs={
            "checkpoint": os.path.abspath(args.checkpoint),
            "codec_id": loaded.codec.id,
            "codec_state": codec_state,
            "out_dir": str(out_dir),
            "pair_mode": args.pair,
            "threads": threads,
        },
        **remote_args,
    )
    del loaded  # the driver's copy of the model is not needed while the workers run
    fused = []
    for row in dataset.iter_rows():
        pair_id, status = str(row["pair_id"]), str(row["status"])
        if status == "ok":
            fused.append(pair_id)
        else:
            failed[pair_id] = status
        print(f"[fuse] {pair_id}: {'ok' if status == 'ok' else 'failed: ' + status}", file=sys.stderr, flush=True)
    print(f"fused {len(fused)} pair(s) into {out_dir}, failed {len(failed)}")
    for pair_id in sorted(failed):
        print(f"  {pair_id}: {failed[pair_id]}")
    if found.rejects:
        print(f"  skipped {len(found.rejects)} file(s) without a partner")
    if not fused:
        raise InputError(f"--batch {args.batch}: none of the {len(items)} pair(s) could be fused")
    return 0


ENTRY_POINT = EntryPoint(PROG, __doc__, add_arguments, command)
build_parser, main = ENTRY_POINT.build_parser, ENTRY_POINT.main


if __name__ == "__main__":
    sys.exit(main())
