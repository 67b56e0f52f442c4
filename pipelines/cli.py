"""The ``jingle`` command: one sub-command per pipeline, same flags as ``python -m``."""

from __future__ import annotations

import sys

from jingle.pipelines import (
    conform,
    demo,
    edit,
    evaluate_fusion,
    fuse,
    masks,
    model_summary,
    preprocess_fusion,
    preprocess_pointer,
    train_fusion,
    train_pointer,
    tune_fusion,
    tune_pointer,
)
from jingle.pipelines.common import OneLineParser, run_main


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="jingle", description="Ray pipelines for the fusion and pointer audio models.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo.ENTRY_POINT.add_to(commands, "demo", help="end-to-end run on generated audio")
    preprocess = commands.add_parser("preprocess", help="WAV pairs -> latent shards")
    targets = preprocess.add_subparsers(dest="target", required=True, metavar="MODEL")
    preprocess_fusion.ENTRY_POINT.add_to(targets, "fusion", help="fusion pairs (input/, target/)")
    preprocess_pointer.ENTRY_POINT.add_to(targets, "pointer", help="pointer pairs (raw/, edit/, optional pointers/ or edl/)")
    train = commands.add_parser("train", help="train a model with Ray Train")
    train_targets = train.add_subparsers(dest="target", required=True, metavar="MODEL")
    train_fusion.ENTRY_POINT.add_to(train_targets, "fusion", help="the fusion model on preprocessed shards")
    train_pointer.ENTRY_POINT.add_to(train_targets, "pointer", help="the pointer network on preprocessed shards")
    tune = commands.add_parser("tune", help="search a training config with Ray Tune and ASHA")
    tune_targets = tune.add_subparsers(dest="target", required=True, metavar="MODEL")
    tune_fusion.ENTRY_POINT.add_to(tune_targets, "fusion", help="the fusion model's loss weights and masking (ranked by val_score)")
    tune_pointer.ENTRY_POINT.add_to(tune_targets, "pointer", help="the pointer network's settings (ranked by val_accuracy_within_2)")
    fuse.ENTRY_POINT.add_to(commands, "fuse", help="fuse an input and a target with a checkpoint")
    evaluate = commands.add_parser("evaluate", help="score a model's outputs against the shortcuts")
    evaluate_targets = evaluate.add_subparsers(dest="target", required=True, metavar="MODEL")
    evaluate_fusion.ENTRY_POINT.add_to(evaluate_targets, "fusion", help="fused audio as an arrangement, against copy, mix and drone")
    conform.ENTRY_POINT.add_to(commands, "conform", help="recover the edit decision list of an edit")
    edit.ENTRY_POINT.add_to(commands, "edit", help="make an edit of a raw recording with a checkpoint")
    masks.ENTRY_POINT.add_to(commands, "masks", help="one PNG per masking strategy")
    model_summary.ENTRY_POINT.add_to(commands, "models", help="model summaries")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(args.handler, args, args.prog)


if __name__ == "__main__":
    sys.exit(main())
