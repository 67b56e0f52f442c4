"""``jingle demo``: the end-to-end run on one machine, with nothing downloaded.

Stages so far: generate a small corpus of fusion pairs (percussive inputs, tonal targets),
then preprocess it into latent shards through Ray Data, and print where everything is.

    python -m pipelines.demo [--out DIR] [--codec mel|encodec_24khz]
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a file (ray submit): make the project importable
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import argparse
import sys
from pathlib import Path

from datasets.synth import CorpusSpec, write_fusion_corpus
from models.codecs import CODEC_NAMES
from pipelines import preprocess_fusion
from pipelines.common import EntryPoint, add_common_arguments

PROG = "jingle demo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="jingle-demo", help="output folder (default: ./jingle-demo)")
    parser.add_argument("--codec", choices=CODEC_NAMES, default="mel", help="latent codec (default: mel)")
    parser.add_argument("--codec-checkpoint", default=None, help="EnCodec weights file (default: torch hub cache)")
    parser.add_argument("--pairs", type=int, default=8, help="generated pairs (default: 8)")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (default: 0)")
    add_common_arguments(parser)


def command(args: argparse.Namespace) -> int:
    out = Path(args.out)
    corpus = out / "corpus"
    if not (corpus / "input").is_dir():
        ids = write_fusion_corpus(corpus, CorpusSpec(pairs=args.pairs, min_seconds=20, max_seconds=40, seed=args.seed))
        print(f"[demo] generated {len(ids)} pairs of drums (input) and chords (target) in {corpus}", file=sys.stderr)
    else:
        print(f"[demo] reusing the corpus in {corpus}", file=sys.stderr)
    shards = out / f"shards-{args.codec}"
    preprocess_args = preprocess_fusion.build_parser().parse_args(
        ["--pairs", str(corpus), "--out", str(shards), "--codec", args.codec, "--rows-per-shard", "8"]
        + (["--codec-checkpoint", args.codec_checkpoint] if args.codec_checkpoint else [])
        + (["--num-cpus", str(args.num_cpus)] if args.num_cpus else [])
    )
    summary = preprocess_fusion.run(preprocess_args)
    print(summary.report())
    print(
        "\nwhere things are:\n"
        f"  corpus     {corpus}/input, {corpus}/target\n"
        f"  shards     {shards}/shards/*.parquet (read with ray.data.read_parquet or pyarrow)\n"
        f"  manifest   {shards}/manifest.json\n"
        f"  rejects    {shards}/rejects.parquet"
    )
    return 0


ENTRY_POINT = EntryPoint(PROG, __doc__, add_arguments, command)
build_parser, main = ENTRY_POINT.build_parser, ENTRY_POINT.main


if __name__ == "__main__":
    sys.exit(main())
