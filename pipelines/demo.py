"""``jingle demo``: the end-to-end run on one machine, with nothing downloaded.

Generates a small corpus of fusion pairs (drum loops as inputs, chord progressions as
targets) and one held-out pair, preprocesses the corpus into latent shards through Ray
Data, trains the fusion model with Ray Train (2 workers, ``configs/demo.json``: a small
model, a few epochs), fuses the held-out pair with the best checkpoint, and prints where
the shards, checkpoints, MLflow store, fused WAV and PNG are.

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
from pipelines import fuse, preprocess_fusion, train_fusion
from pipelines.common import EntryPoint, add_common_arguments

PROG = "jingle demo"
DEMO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="jingle-demo", help="output folder (default: ./jingle-demo)")
    parser.add_argument("--codec", choices=CODEC_NAMES, default="mel", help="latent codec (default: mel)")
    parser.add_argument("--codec-checkpoint", default=None, help="EnCodec weights file (default: torch hub cache)")
    parser.add_argument("--pairs", type=int, default=8, help="generated training pairs (default: 8)")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (default: 0)")
    parser.add_argument("--config", default=str(DEMO_CONFIG), help="training config (default: configs/demo.json)")
    parser.add_argument("--workers", type=int, default=2, help="training workers (default: 2)")
    add_common_arguments(parser)


def command(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    corpus, held_out = out / "corpus", out / "held-out"
    if not (corpus / "input").is_dir():
        ids = write_fusion_corpus(corpus, CorpusSpec(pairs=args.pairs, min_seconds=20, max_seconds=40, seed=args.seed))
        # generated from the same seed but an index the corpus never uses: a pair no worker saw
        write_fusion_corpus(held_out, CorpusSpec(pairs=1, min_seconds=20, max_seconds=20, seed=args.seed), first_index=10_000)
        print(f"[demo] generated {len(ids)} pairs of drums (input) and chords (target) in {corpus}", file=sys.stderr)
    else:
        print(f"[demo] reusing the corpus in {corpus}", file=sys.stderr)
    codec_flags = ["--codec-checkpoint", args.codec_checkpoint] if args.codec_checkpoint else []
    cpu_flags = ["--num-cpus", str(args.num_cpus)] if args.num_cpus else []

    shards = out / f"shards-{args.codec}"
    print("[demo] 1/3 preprocessing", file=sys.stderr)
    summary = preprocess_fusion.run(
        preprocess_fusion.build_parser().parse_args(
            ["--pairs", str(corpus), "--out", str(shards), "--codec", args.codec, "--rows-per-shard", "8"] + codec_flags + cpu_flags
        )
    )
    print(summary.report())

    print(f"[demo] 2/3 training with {args.workers} workers", file=sys.stderr)
    trained = train_fusion.run(
        train_fusion.build_parser().parse_args(
            ["--data", str(shards), "--config", args.config, "--workers", str(args.workers), "--storage", str(out / "runs"),
             "--name", f"demo-{args.codec}"] + codec_flags
        )
    )
    print(trained.report())

    print("[demo] 3/3 fusing the held-out pair", file=sys.stderr)
    fused = out / "fused" / "held_out.wav"
    code = fuse.main(
        ["--checkpoint", trained.best_checkpoint, str(held_out / "input" / "pair_10000.wav"),
         str(held_out / "target" / "pair_10000.wav"), "-o", str(fused), "--device", "cpu"] + codec_flags
    )
    if code:
        return code
    print(
        "\nwhere things are:\n"
        f"  corpus       {corpus}/input, {corpus}/target (held-out pair in {held_out})\n"
        f"  shards       {shards}/shards/*.parquet, {shards}/manifest.json, {shards}/rejects.parquet\n"
        f"  checkpoints  {trained.run_dir} (best: {trained.best_checkpoint})\n"
        f"  MLflow       {trained.tracking_uri} (run {trained.run_id}); open it with: mlflow ui --backend-store-uri {trained.tracking_uri}\n"
        f"  fused audio  {fused}, {fused.with_suffix('.png')}, {fused.with_suffix('.json')}"
    )
    return 0


ENTRY_POINT = EntryPoint(PROG, __doc__, add_arguments, command)
build_parser, main = ENTRY_POINT.build_parser, ENTRY_POINT.main


if __name__ == "__main__":
    sys.exit(main())
