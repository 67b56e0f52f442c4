"""The ``jingle`` command: one sub-command per pipeline, same flags as ``python -m``."""

from __future__ import annotations

import sys

from jingle.pipelines import conform, demo, edit, evaluate_fusion, fuse, masks, model_summary, train, tune
from jingle.pipelines.common import OneLineParser, run_main
from jingle.pipelines.registry import MODELS


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="jingle", description="Ray pipelines for the fusion and pointer audio models.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo.ENTRY_POINT.add_to(commands, "demo", help="end-to-end run on generated audio")
    # preprocess, train and tune: one sub-command per registered model (pipelines/registry.py)
    preprocess = commands.add_parser("preprocess", help="WAV pairs -> latent shards")
    preprocess_targets = preprocess.add_subparsers(dest="target", required=True, metavar="MODEL")
    train_targets = commands.add_parser("train", help="train a model with Ray Train").add_subparsers(
        dest="target", required=True, metavar="MODEL")
    tune_targets = commands.add_parser("tune", help="search a training config with Ray Tune and ASHA").add_subparsers(
        dest="target", required=True, metavar="MODEL")
    for name, model in MODELS.items():
        entry_point = model.preprocess_entry_point()
        if entry_point is not None:
            entry_point.add_to(preprocess_targets, name, help=model.preprocess_help)
        train.entry_point(name, f"``jingle train {name}``: {model.train_help}.").add_to(train_targets, name, help=model.train_help)
        tune.entry_point(name, f"``jingle tune {name}``: {model.tune_help}.").add_to(tune_targets, name, help=model.tune_help)
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
