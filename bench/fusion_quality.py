"""Fusion quality: what a trained model writes, scored against the shortcuts and a real arrangement.

    python bench/fusion_quality.py [--epochs 60] [--train-pairs 16] [--held-out 4]
        [--seconds 12] [--segment-seconds 4] [--override losses.KEY=VALUE ...]
        [--work DIR] [--smoke] [--ray-address ADDR]

What a user does, end to end, on generated pairs (drums as input, chords as target):

1. ``--train-pairs`` pairs and ``--held-out`` pairs no training step sees (other seeds),
   with each held-out pair's rendered arrangement (``datasets/synth.py``: the target's
   chords articulated on the input's drum hits, in the target's instrument);
2. ``jingle preprocess fusion`` (mel codec, ``--segment-seconds`` segments);
3. ``jingle train fusion`` of the demo-size model (``configs/demo.json``'s model and
   masking) with ``configs/fusion.json``'s loss weights, ``--override`` applied, for
   ``--epochs`` epochs; the best checkpoint is chosen by ``val_score`` on the run's own
   validation pairs;
4. ``jingle evaluate fusion --checkpoint BEST --pairs HELD_OUT --arrangements
   HELD_OUT/arrangement``: the model, the rendered arrangement (as rendered, and decoded
   through the codec the way the model's output is: ``arrangement_decoded``) and every
   shortcut (the smeared arrangement among them), scored on every held-out pair.

It prints the mean score of each (and its ratio to the best shortcut's, the baseline of
the same run), the mean of every part figure and of the note figures (onset F1 against the
input, pitch-class precision and recall, notes per second), on how many pairs the model
beats every shortcut, and the time of each step, and writes ``WORK/results.json``.
``--smoke`` (tiny corpus, one epoch) only checks that it runs.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a file: make the project importable
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from bench.machine import add_ray_address_argument, describe_machine, start_ray
from jingle.datasets.synth import CorpusSpec, write_fusion_corpus
from jingle.evaluation.arrangement import SCORE_FIGURES
from jingle.evaluation.shortcuts import ALL_SHORTCUTS
from jingle.pipelines import evaluate_fusion, preprocess_fusion, train_fusion
from jingle.pipelines.run_spec import parse_overrides

ROOT = Path(__file__).resolve().parent.parent
HELD_OUT_FIRST_INDEX = 10_000  # seeds the corpus never uses


def build_config(work: Path, *, epochs: int | None = None) -> Path:
    """configs/demo.json's model size, masking and training with configs/fusion.json's
    defaults for everything else (losses, validation, ``model.target_skip``; the demo's own
    levers are ``--variant``s) and ``epochs`` when given, written to ``WORK/config.json``."""
    demo = json.loads((ROOT / "configs" / "demo.json").read_text())
    full = json.loads((ROOT / "configs" / "fusion.json").read_text())
    model = {**demo["model"], "target_skip": full["model"]["target_skip"]}
    config = {**demo, "model": model, "losses": full["losses"], "validation": full["validation"]}
    if epochs is not None:
        config["training"] = {**demo["training"], "epochs": epochs}
    path = work / "config.json"
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def make_corpus(work: Path, args: argparse.Namespace) -> tuple[Path, dict[str, Path]]:
    """The training corpus (with its rendered arrangements, for the teacher term) and the
    held-out sets: pairs of the corpus's style from seeds it never uses, and pairs of
    another style (other grooves, tempi, keys and instruments: ``datasets/synth.py``)."""
    corpus, held_out = work / "corpus", {"held-out": work / "held-out", "other-style": work / "other-style"}
    for folder in (corpus, *held_out.values()):
        shutil.rmtree(folder, ignore_errors=True)
    lengths = dict(min_seconds=args.seconds, max_seconds=args.seconds, seed=args.seed)
    write_fusion_corpus(corpus, CorpusSpec(pairs=args.train_pairs, **lengths), arrangements=True)
    write_fusion_corpus(held_out["held-out"], CorpusSpec(pairs=args.held_out, **lengths), first_index=HELD_OUT_FIRST_INDEX,
                        arrangements=True)
    if args.other_style:
        write_fusion_corpus(held_out["other-style"], CorpusSpec(pairs=args.other_style, style="other", **lengths),
                            first_index=HELD_OUT_FIRST_INDEX, arrangements=True)
    else:
        del held_out["other-style"]
    return corpus, held_out


def parse_variants(values: list[str], overrides: list[str]) -> dict[str, list[str]]:
    """``LABEL=KEY=VALUE[,KEY=VALUE...]`` flags -> label -> overrides (``--override``s apply to
    every variant); no flag: the shipped config alone, labelled ``model``."""
    if not values:
        return {"model": list(overrides)}
    variants: dict[str, list[str]] = {}
    for value in values:
        label, separator, rest = value.partition("=")
        if not label or label in variants:
            raise SystemExit(f"--variant takes LABEL=KEY=VALUE[,KEY=VALUE...] with distinct labels, got {value!r}")
        variants[label] = list(overrides) + ([item for item in rest.split(",") if item] if separator else [])
    return variants


# the note figures beside the score's parts (evaluation/notes.py)
NOTE_FIGURES = ("note_onset_f1", "pitch_class_precision", "pitch_class_recall", "notes_per_second")
COLUMNS = ("score", *SCORE_FIGURES, *NOTE_FIGURES)
SHORT_NAMES = {"note_onset_f1": "onset F1", "pitch_class_precision": "pc prec", "pitch_class_recall": "pc recall",
               "notes_per_second": "notes/s"}


def summarize(report: dict) -> dict[str, dict[str, float]]:
    """Output name -> mean score, part and note figures over the held-out pairs, and
    ``wins``: on how many pairs it beats every shortcut."""
    rows: dict[str, dict[str, list[float]]] = {}
    for pair in report["pairs"]:
        best_shortcut = max(entry["score"] for entry in pair["outputs"] if entry.get("shortcut"))
        for entry in pair["outputs"]:
            row = rows.setdefault(entry["name"], {})
            row.setdefault("score", []).append(entry["score"])
            row.setdefault("wins", []).append(float(entry["score"] > best_shortcut))
            for name in COLUMNS[1:]:
                value = entry["figures"].get(name)
                if value is not None:
                    row.setdefault(name, []).append(value)
    means = {name: {key: float(np.mean(values)) for key, values in row.items()} for name, row in rows.items()}
    for name, row in rows.items():
        means[name]["wins"] = float(np.sum(row["wins"]))
    return means


def print_table(means: dict[str, dict[str, float]], pairs: int) -> None:
    best_shortcut = max(row["score"] for name, row in means.items() if name in ALL_SHORTCUTS)
    print(f"{'output':<22}" + "".join(f"{SHORT_NAMES.get(c, c):>10}" for c in COLUMNS) + f"{'/ best shortcut':>16}{'beats all':>11}")
    for name, row in means.items():
        cells = "".join(f"{row[column]:>10.3f}" if column in row else f"{'n/a':>10}" for column in COLUMNS)
        wins = "" if name in ALL_SHORTCUTS else f"{int(row['wins'])}/{pairs}"
        print(f"{name + ('*' if name in ALL_SHORTCUTS else ''):<22}{cells}{row['score'] / best_shortcut:>16.2f}{wins:>11}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--train-pairs", type=int, default=16)
    parser.add_argument("--held-out", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=12.0, help="length of every generated clip")
    parser.add_argument("--segment-seconds", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="training config override (repeatable)")
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL=KEY=VALUE[,KEY=VALUE...]",
                        help="a model to train and score beside the others, with these overrides (repeatable)")
    parser.add_argument("--other-style", type=int, default=4, help="held-out pairs of another style (0: none)")
    parser.add_argument("--work", default="out/bench-fusion-quality")
    parser.add_argument("--smoke", action="store_true", help="tiny corpus, one epoch: checks that it runs")
    add_ray_address_argument(parser)
    return parser


def train_and_score(args, work: Path, shards: Path, config: Path, held_out: dict[str, Path], label: str, overrides: list[str],
                    timings: dict[str, float]) -> dict:
    """Train one variant and score its best checkpoint on every held-out set."""
    storage = work / "runs"
    spec = train_fusion.spec(data=str(shards), config=str(config), storage=storage, name=f"quality-{label}", workers=1,
                             overrides=parse_overrides(overrides))
    started = time.perf_counter()
    trained = train_fusion.run(spec)
    timings[f"train {label}"] = time.perf_counter() - started
    print(trained.report())
    scored = {"overrides": overrides, "steps": trained.step, "best_checkpoint": trained.best_checkpoint, "sets": {}}
    for name, folder in held_out.items():
        evaluation = work / "evaluation" / label / name
        shutil.rmtree(evaluation, ignore_errors=True)
        started = time.perf_counter()
        evaluate_fusion.command(evaluate_fusion.spec(checkpoint=trained.best_checkpoint, pairs=str(folder), out=str(evaluation),
                                                     arrangements=str(folder / "arrangement"), device="cpu"))
        timings[f"evaluate {label} {name}"] = time.perf_counter() - started
        report = json.loads((evaluation / "report.json").read_text())
        scored["sets"][name] = {"pairs": len(report["pairs"]), "means": summarize(report), "report": str(evaluation / "report.md")}
    return scored


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.smoke:
        args.epochs, args.train_pairs, args.held_out, args.other_style, args.seconds, args.segment_seconds = 1, 4, 1, 1, 3.0, 1.5
    variants = parse_variants(args.variant, args.override)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(describe_machine())
    timings: dict[str, float] = {}
    started = time.perf_counter()
    corpus, held_out = make_corpus(work, args)
    timings["generate"] = time.perf_counter() - started

    start_ray(args.ray_address)
    shards = work / "shards"
    shutil.rmtree(shards, ignore_errors=True)
    started = time.perf_counter()
    preprocess_fusion.run(preprocess_fusion.spec(pairs=str(corpus), out=shards, codec="mel", segment_seconds=args.segment_seconds, quiet=True))
    timings["preprocess"] = time.perf_counter() - started

    config = build_config(work, epochs=args.epochs)
    shutil.rmtree(work / "runs", ignore_errors=True)
    results = {label: train_and_score(args, work, shards, config, held_out, label, overrides, timings) for label, overrides in variants.items()}

    for name in held_out:
        print(f"\n{name}: {args.held_out if name == 'held-out' else args.other_style} pairs, every variant trained "
              f"{args.epochs} epochs on the same {args.train_pairs} pairs (best checkpoint by val_score)")
        rows = {}
        for label, result in results.items():
            means = result["sets"][name]["means"]
            rows[label] = means["model"]
            rows.update({other: row for other, row in means.items() if other != "model"})  # the same in every variant's report
        print_table(rows, results[next(iter(results))]["sets"][name]["pairs"])
    print("time: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items())
          + f"; all {sum(timings.values()):.0f} s")
    summary = {"epochs": args.epochs, "variants": results, "timings": timings}
    if len(results) == 1:  # the shape the single-model run always had
        only = next(iter(results.values()))
        summary.update(overrides=only["overrides"], steps=only["steps"], means=only["sets"]["held-out"]["means"],
                       best_checkpoint=only["best_checkpoint"], report=only["sets"]["held-out"]["report"])
    (work / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
