"""``jingle evaluate fusion``: score fused audio as an arrangement, against the shortcuts.

    python -m pipelines.evaluate_fusion INPUT.wav TARGET.wav OUTPUT.wav [OUTPUT2.wav ...] --out DIR
        [--arrangement FILE]
    python -m pipelines.evaluate_fusion --checkpoint CKPT --pairs DIR_OR_MANIFEST --out DIR
        [--arrangements FOLDER] [--compare NAME=FOLDER ...] [--pair best|mean|N] [--actors N]
        [--codec-checkpoint PATH]

The first form scores any outputs (a model's, another system's, a hand-made one) against
their input and target. The second fuses every pair of a folder or manifest with a
checkpoint, through the same code and Ray Data actor pool as ``jingle fuse --batch`` (the
fused files go to ``DIR/fused/``), and scores each fusion as ``model``; ``--compare
NAME=FOLDER`` scores ``FOLDER/<pair_id>.wav`` beside it as ``NAME`` (another system).
``--arrangement``/``--arrangements`` give the pairs' reference arrangements (a hand-made
or rendered one): each is scored as ``arrangement``, with the second form also as
``arrangement_decoded`` (through the checkpoint's codec, the way the model's output is),
and its time-smeared copy is scored as the shortcut ``smeared_arrangement``.

Both also score, in the same run, the shortcuts a loss can settle on
(``evaluation/shortcuts.py``), and write ``DIR/report.json``, ``DIR/report.md`` and one
picture per pair in ``DIR/pictures/``. What the score and its figures measure:
``evaluation/arrangement.py`` and ``evaluation/notes.py``. A bad or missing file stops the first
form with one line (exit 2); in the second, it fails its pair only, and the run stops
(exit 2) if no pair is left.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jingle.core.storage import Location, check_writable, staged
from jingle.pipelines.common import EntryPoint, UsageError, add_codec_checkpoint_argument, add_common_arguments, add_model_device_argument

from jingle.pipelines.run_spec import EvaluateFusionSpec, spec_from_args

PROG = "jingle evaluate fusion"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="*", metavar="INPUT.wav TARGET.wav OUTPUT.wav", help="a pair and one or more outputs to score")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for report.json, report.md and pictures/")
    parser.add_argument("--checkpoint", default=None, metavar="CKPT", help="fuse --pairs with this fusion checkpoint and score the fusions")
    parser.add_argument("--pairs", default=None, metavar="DIR_OR_MANIFEST", help="with --checkpoint: a folder (input/, target/) or CSV/JSONL manifest")
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="NAME=FOLDER",
        help="with --checkpoint: also score FOLDER/<pair_id>.wav as NAME (repeatable)",
    )
    parser.add_argument("--arrangement", default=None, metavar="FILE", help="the pair's reference arrangement (first form)")
    parser.add_argument(
        "--arrangements", default=None, metavar="FOLDER",
        help="with --checkpoint: the pairs' reference arrangements, FOLDER/<pair_id>.wav",
    )
    add_codec_checkpoint_argument(parser)
    parser.add_argument("--pair", type=pair_mode, default="best", metavar="best|mean|N", help="adaptive window agent: which pair to keep per chunk (as jingle fuse)")
    add_model_device_argument(parser)
    parser.add_argument("--actors", type=int, default=None, metavar="N", help="with --checkpoint: fusion actors at most")
    add_common_arguments(parser)


def pair_mode(text: str):
    from jingle.pipelines.fuse import parse_pair_mode

    return parse_pair_mode(text)


def command(spec: EvaluateFusionSpec) -> int:
    out = Location.of(spec.out)
    check_writable(out, "--out")
    with staged(out) as folder:  # a bucket's report is written here, then uploaded
        return evaluate(spec, out, folder)


def evaluate(spec: EvaluateFusionSpec, out: Location, folder: Path) -> int:
    if spec.checkpoint is not None or spec.pairs is not None:
        from jingle.pipelines.fuse import evaluate_checkpoint  # Ray and the model only for this form

        if spec.files:
            raise UsageError("give either INPUT.wav TARGET.wav OUTPUT.wav... or --checkpoint CKPT --pairs DIR, not both")
        if spec.checkpoint is None or spec.pairs is None:
            raise UsageError("--checkpoint and --pairs go together: --checkpoint CKPT --pairs DIR_OR_MANIFEST --out DIR")
        if spec.arrangement is not None:
            raise UsageError("--arrangement FILE goes with the files form; with --checkpoint, give --arrangements FOLDER")
        if spec.arrangements is not None and not Path(spec.arrangements).is_dir():
            raise UsageError(f"--arrangements {spec.arrangements} is not a folder")
        pairs = evaluate_checkpoint(spec, compare=parse_compare(spec.compare))
    else:
        if spec.compare or spec.actors is not None or spec.arrangements is not None:
            raise UsageError("--compare, --arrangements and --actors go with --checkpoint CKPT --pairs DIR")
        pairs = [evaluate_given_files(spec, folder)]
    from jingle.pipelines.fusion_evaluation import summary_table, write_report

    write_report(folder, pairs)
    for pair in pairs:
        best = max(pair.outputs, key=lambda entry: entry["score"])
        print(f"{pair.label}: " + ", ".join(f"{entry['name']} {entry['score']:.3f}" for entry in pair.outputs) + f" (best: {best['name']})")
    if len(pairs) > 1:
        print("\n".join(summary_table(pairs)[2:]))
    print(f"wrote {out / 'report.json'}, {out / 'report.md'} and {len(pairs)} picture(s) in {out / 'pictures'}")
    return 0


def evaluate_given_files(spec: EvaluateFusionSpec, folder: Path):
    from jingle.pipelines.fusion_evaluation import evaluate_files, output_names, picture_path

    if len(spec.files) < 3:
        raise UsageError("give INPUT.wav TARGET.wav and at least one OUTPUT.wav (or --checkpoint CKPT --pairs DIR)")
    input_path, target_path, *output_paths = spec.files
    try:
        names = output_names(output_paths)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if spec.arrangement is not None and "arrangement" in names:
        raise UsageError("an output is named 'arrangement', as --arrangement's file is scored: rename it")
    stems = Path(input_path).stem, Path(target_path).stem
    label = stems[0] if stems[0] == stems[1] else "+".join(stems)  # pair_0001, or drums+piano
    return evaluate_files(input_path, target_path, dict(zip(names, output_paths)), pair_id=label,
                          picture=picture_path(folder, label), arrangement=spec.arrangement)


def parse_compare(values: list[str]) -> dict[str, Path]:
    """``NAME=FOLDER`` flags -> {name: folder}; names distinct and not the model's, the
    arrangement's or a shortcut's."""
    from jingle.evaluation.shortcuts import ALL_SHORTCUTS

    compare: dict[str, Path] = {}
    for value in values:
        name, separator, folder = value.partition("=")
        if not separator or not name or not folder:
            raise UsageError(f"--compare takes NAME=FOLDER, got {value!r}")
        if name in compare or name in ("model", "arrangement", "arrangement_decoded") or name in ALL_SHORTCUTS:
            raise UsageError(
                f"--compare name {name!r} is taken (model, arrangement, arrangement_decoded, the shortcuts "
                "and earlier --compare names are)"
            )
        if not Path(folder).is_dir():
            raise UsageError(f"--compare {value}: {folder} is not a folder")
        compare[name] = Path(folder).resolve()
    return compare


ENTRY_POINT = EntryPoint(PROG, __doc__, add_arguments, lambda args: command(spec_from_args(EvaluateFusionSpec, args)))
spec = EvaluateFusionSpec  # keyword arguments -> the spec of a run
build_parser, main = ENTRY_POINT.build_parser, ENTRY_POINT.main


if __name__ == "__main__":
    sys.exit(main())
