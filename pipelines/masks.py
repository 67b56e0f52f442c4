"""``jingle masks``: pictures of the complementary masks, one PNG per strategy.

Generates one fusion pair (a drum loop as the input, chords as the target), encodes both
with the codec, applies each masking strategy with its defaults in seconds at the codec's
frame rate, and writes ``OUT/mask_<strategy>.png``: the input and target masks over time x
channels, and the masked input and target latents. Masked-out positions take the codec's
latent of silence, so that the pictures show what the model is given in training. Runs on
one machine, without Ray.

    python -m pipelines.masks --out DIR [--codec mel] [--seed 0] [--seconds 8]
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch

from jingle.datasets.synth import chords, drums
from jingle.models.codecs import CODEC_NAMES, build_codec
from jingle.models.masking import STRATEGIES, MaskedPair, MaskingConfig, apply_complementary_mask, frame_energy
from jingle.pipelines.common import EntryPoint, UsageError, add_codec_checkpoint_argument

PROG = "jingle masks"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder for the PNG files (created if missing)")
    parser.add_argument("--codec", choices=CODEC_NAMES, default="mel", help="latent codec (default: mel)")
    add_codec_checkpoint_argument(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated pair and the spectral mask (default: 0)")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of the example in seconds (default: 8)")
    # no --num-cpus: this command starts no Ray
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")


def command(args: argparse.Namespace) -> int:
    if not args.seconds > 0:
        raise UsageError(f"--seconds must be positive, got {args.seconds}")
    codec = build_codec(args.codec, checkpoint=args.codec_checkpoint)
    input_wav, target_wav = example_pair(args.seconds, codec.sample_rate, args.seed)  # [1, 1, S] each
    with torch.inference_mode():
        input_latents = codec.encode(input_wav)  # [1, D, T]
        target_latents = codec.encode(target_wav)  # [1, D, T]
        silence = codec.silence_latent().view(1, -1, 1)  # [1, D, 1]
    # the drums decide the energy split: measured on the waveform, since the mean square
    # of a log-mel latent is largest where the audio is quietest
    energy = frame_energy(input_wav, codec.hop_length)[:, : input_latents.shape[-1]]  # [1, T]

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for strategy in STRATEGIES:
        config = MaskingConfig.for_frame_rate(codec.frame_rate, strategy=strategy)
        masked = apply_complementary_mask(
            input_latents,
            target_latents,
            config,
            generator=torch.Generator().manual_seed(args.seed),
            energy=energy,
            fill_value=silence,
        )
        path = out / f"mask_{strategy}.png"
        plot_masks(masked, input_latents, target_latents, codec.frame_rate, path, codec_name=codec.name)
        print(f"wrote {path}: {masked.description}")
    return 0


def example_pair(seconds: float, sample_rate: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A drum loop (input) and a chord progression (target) from ``seed``: [1, 1, S] each."""
    rng = np.random.default_rng(seed)
    input_wav = torch.from_numpy(drums(seconds, sample_rate, rng))[None, None]  # [1, 1, S]
    target_wav = torch.from_numpy(chords(seconds, sample_rate, rng))[None, None]  # [1, 1, S]
    return input_wav, target_wav


def plot_masks(
    masked: MaskedPair,
    input_latents: torch.Tensor,
    target_latents: torch.Tensor,
    frame_rate: float,
    path: Path,
    *,
    codec_name: str,
) -> None:
    """Write a 2x2 figure of example 0: the two masks (top) and the masked latents (bottom)."""
    # Figure with an explicit Agg canvas, not pyplot: no global backend to switch and no
    # figure left open in a long-running process.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    channels, frames = masked.input_mask.shape[1:]
    extent = (0.0, frames / frame_rate, 0.0, channels)  # seconds on x, channels on y
    # one colour scale for all latents, from the unmasked pair, so that masked-out
    # positions read as silence against both sources
    latents = torch.cat([input_latents[0], target_latents[0]]).float()  # [2D, T]
    low, high = latents.min().item(), latents.max().item()

    figure = Figure(figsize=(13, 7.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, 2, sharex=True, sharey=True)
    panels = (
        (axes[0, 0], masked.input_mask, "input mask", "gray", (0.0, 1.0)),
        (axes[0, 1], masked.target_mask, "target mask", "gray", (0.0, 1.0)),
        (axes[1, 0], masked.input, f"masked input (drums, {codec_name} latents)", "magma", (low, high)),
        (axes[1, 1], masked.target, f"masked target (chords, {codec_name} latents)", "magma", (low, high)),
    )
    for axis, values, title, colour_map, (value_min, value_max) in panels:
        image = axis.imshow(
            values[0].float().cpu().numpy(),  # [D, T]
            origin="lower",
            aspect="auto",
            interpolation="nearest",
            extent=extent,
            cmap=colour_map,
            vmin=value_min,
            vmax=value_max,
        )
        axis.set_title(title)
        figure.colorbar(image, ax=axis)
    for axis in axes[1]:
        axis.set_xlabel("time (s)")
    for axis in axes[:, 0]:
        axis.set_ylabel("channel")
    figure.suptitle("\n".join(textwrap.wrap(masked.description, width=120)))
    figure.savefig(path, dpi=80)


ENTRY_POINT = EntryPoint(PROG, __doc__, add_arguments, command)
build_parser, main = ENTRY_POINT.build_parser, ENTRY_POINT.main


if __name__ == "__main__":
    sys.exit(main())
