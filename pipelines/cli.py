"""The ``jingle`` command: one sub-command per pipeline, same flags as ``python -m``."""

from __future__ import annotations

import sys

from pipelines import demo, masks, models, preprocess_fusion
from pipelines.common import OneLineParser, run_main


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="jingle", description="Ray pipelines for the fusion and pointer audio models.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo_parser = commands.add_parser("demo", help="end-to-end run on generated audio", description=demo.__doc__.splitlines()[0])
    demo.add_arguments(demo_parser)
    demo_parser.set_defaults(handler=demo.command, prog=demo.PROG)

    preprocess = commands.add_parser("preprocess", help="WAV pairs -> latent shards")
    targets = preprocess.add_subparsers(dest="target", required=True, metavar="MODEL")
    fusion = targets.add_parser("fusion", help="fusion pairs (input/, target/)", description=preprocess_fusion.__doc__.splitlines()[0])
    preprocess_fusion.add_arguments(fusion)
    fusion.set_defaults(handler=preprocess_fusion.command, prog=preprocess_fusion.PROG)

    masks_parser = commands.add_parser("masks", help="one PNG per masking strategy", description=masks.__doc__.splitlines()[0])
    masks.add_arguments(masks_parser)
    masks_parser.set_defaults(handler=masks.command, prog=masks.PROG)

    models_parser = commands.add_parser("models", help="model summaries", description=models.__doc__.splitlines()[0])
    models.add_arguments(models_parser)
    models_parser.set_defaults(handler=models.command, prog=models.PROG)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(args.handler, args, args.prog)


if __name__ == "__main__":
    sys.exit(main())
