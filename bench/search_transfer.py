"""Search transfer: does a search's ranking hold on pairs no trial saw?

    python bench/search_transfer.py [--samples 12] [--max-epochs 9] [--full-epochs 60]
        [--train-pairs 12] [--validation-pairs 6] [--test-pairs 6] [--seconds 12] [--segment-seconds 4]
        [--space tune_spaces/fusion_loss_weights.yaml] [--work DIR] [--smoke] [--ray-address ADDR]

Three generated corpora from disjoint seeds (drums -> chords, mel codec, ``--segment-seconds``
segments): training pairs, validation pairs and test pairs. The demo-size model
(``configs/demo.json``'s model with ``configs/fusion.json``'s losses) is searched twice by the
real ``jingle tune fusion``, on the same space, sample count and seed (ASHA), ranked by
``val_score`` measured two ways:

- ``split``: validation pairs split off the training folder by pair id (the config's
  ``validation_fraction``, 0.2 of 12 pairs) and its first ``validation.score_segments`` (8)
  segments scored: how a search ranked its trials before ``--validation`` existed;
- ``folder``: ``--validation VALIDATION_SHARDS``, every segment of the validation pairs
  scored (``validation.score_segments`` = their count, interleaved over the pairs).

For each search, every trial's best checkpoint (``trials.csv``) is fused and scored on the
test pairs (``evaluation/arrangement.py``'s score against the test sources), and the Spearman
rank correlation between the trials' ``val_score`` and their test scores is printed (aim:
>= 0.7). Then ``configs``' default and each search's ``best_config.json`` are trained in
full (``--full-epochs``, the same seed, each validated on the validation folder) and scored
on the test pairs (aim: the best config at or above the default). It writes
``WORK/results.json``; ``--smoke`` (tiny corpora, 2 trials of 1 epoch, the default config
trained) only checks that it runs.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a file: make the project importable
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from bench.fusion_quality import build_config
from bench.machine import add_ray_address_argument, describe_machine, start_ray
from jingle.datasets.synth import CorpusSpec, write_fusion_corpus
from jingle.pipelines import preprocess_fusion, train_fusion, tune_fusion
from jingle.pipelines.shard_data import ShardData

ROOT = Path(__file__).resolve().parent.parent
VALIDATION_FIRST_INDEX = 20_000  # seeds neither the training corpus nor the test pairs use
TEST_FIRST_INDEX = 10_000
TEST_FIGURES = ("score", "rhythm", "harmony", "clarity", "note_onset_f1", "pitch_class_precision", "pitch_class_recall")


class TestPairs:
    """The test pairs, their sources analysed once at the codec's rate, and any fusion
    checkpoint's mean score and figures on them."""

    def __init__(self, folder: Path, sample_rate: int) -> None:
        from jingle.datasets.audio import read_mono
        from jingle.evaluation.arrangement import analyse_sources

        self.sample_rate = sample_rate
        self.pairs = []
        for input_path in sorted((folder / "input").glob("*.wav")):
            input_audio = read_mono(input_path, sample_rate)
            target_audio = read_mono(folder / "target" / input_path.name, sample_rate)
            length = min(len(input_audio), len(target_audio))
            self.pairs.append((input_audio[:length], target_audio[:length], analyse_sources(input_audio[:length], target_audio[:length], sample_rate)))

    def score(self, checkpoint: str) -> dict[str, float]:
        from jingle.evaluation.arrangement import score_output
        from jingle.pipelines.fusion_inference import fuse_audio, load_fusion_checkpoint

        loaded = load_fusion_checkpoint(checkpoint, device="cpu")
        if loaded.codec.sample_rate != self.sample_rate:
            raise ValueError(f"{checkpoint}: codec rate {loaded.codec.sample_rate}, test pairs read at {self.sample_rate}")
        values: dict[str, list[float]] = {}
        for input_audio, target_audio, sources in self.pairs:
            fused = fuse_audio(loaded.model, loaded.codec, input_audio, target_audio, "best", loaded.segment_seconds, "cpu")
            result = score_output(sources, fused.audio, self.sample_rate)
            for name in TEST_FIGURES:
                value = result.score if name == "score" else result.figures.get(name)
                if value is not None:
                    values.setdefault(name, []).append(value)
        return {name: float(np.mean(items)) for name, items in values.items()}


def spearman(x: list[float], y: list[float]) -> float | None:
    from scipy.stats import spearmanr

    if len(x) < 3:
        return None
    return float(spearmanr(x, y).statistic)


def read_trials(trials_csv: Path) -> list[dict[str, str]]:
    with trials_csv.open(newline="") as file:
        return [row for row in csv.DictReader(file) if row.get("best_checkpoint") and row.get("best_val_score")]


def search(args: argparse.Namespace, work: Path, shards: Path, config: Path, name: str, validation: Path | None):
    reuse = args.reuse and (work / "runs" / name / "trials.csv").exists()
    if not reuse:
        shutil.rmtree(work / "runs" / name, ignore_errors=True)
    spec = tune_fusion.spec(data=str(shards), space=args.space, config=str(config), samples=args.samples, max_epochs=args.max_epochs,
                            seed=0, storage=work / "runs", name=name, validation=str(validation) if validation is not None else None,
                            resume=reuse)  # every trial finished: Tune reruns none of them
    started = time.perf_counter()
    summary = tune_fusion.run(spec)
    return summary, time.perf_counter() - started


def train_full(work: Path, shards: Path, validation: Path, config: Path, name: str, epochs: int, *, reuse: bool) -> tuple[str, float]:
    if not reuse:  # else a finished run resumes at its last epoch and trains no further
        shutil.rmtree(work / "runs" / name, ignore_errors=True)
    spec = train_fusion.spec(data=str(shards), validation=str(validation), config=str(config), storage=work / "runs", name=name,
                             workers=1, overrides={"training.epochs": epochs})
    started = time.perf_counter()
    summary = train_fusion.run(spec)
    return summary.best_checkpoint, time.perf_counter() - started


def with_score_segments(config: Path, segments: int, out: Path) -> Path:
    values = json.loads(config.read_text())
    values["validation"] = {**values.get("validation", {}), "score_segments": segments}
    out.write_text(json.dumps(values, indent=2) + "\n")
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--samples", type=int, default=12)
    parser.add_argument("--max-epochs", type=int, default=9)
    parser.add_argument("--full-epochs", type=int, default=60)
    parser.add_argument("--train-pairs", type=int, default=12)
    parser.add_argument("--validation-pairs", type=int, default=6)
    parser.add_argument("--test-pairs", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--segment-seconds", type=float, default=4.0)
    parser.add_argument("--space", default=str(ROOT / "tune_spaces" / "fusion_loss_weights.yaml"))
    parser.add_argument("--work", default="out/bench-search-transfer")
    parser.add_argument("--smoke", action="store_true", help="tiny corpora, 2 trials of 1 epoch: checks that it runs")
    parser.add_argument("--reuse", action="store_true",
                        help="keep WORK's corpora, shards, finished searches and trainings (an interrupted run goes on; times then count only what ran)")
    add_ray_address_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.smoke:
        args.samples, args.max_epochs, args.full_epochs = 2, 1, 1
        args.train_pairs, args.validation_pairs, args.test_pairs, args.seconds, args.segment_seconds = 5, 2, 2, 3.0, 1.5
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(describe_machine())
    timings: dict[str, float] = {}
    started = time.perf_counter()
    folders = {"train": work / "corpus", "validation": work / "validation", "test": work / "test"}
    spec = dict(min_seconds=args.seconds, max_seconds=args.seconds, seed=0)
    if not (args.reuse and all(folder.is_dir() for folder in folders.values())):
        for folder in folders.values():
            shutil.rmtree(folder, ignore_errors=True)
        write_fusion_corpus(folders["train"], CorpusSpec(pairs=args.train_pairs, **spec))
        write_fusion_corpus(folders["validation"], CorpusSpec(pairs=args.validation_pairs, **spec), first_index=VALIDATION_FIRST_INDEX)
        write_fusion_corpus(folders["test"], CorpusSpec(pairs=args.test_pairs, **spec), first_index=TEST_FIRST_INDEX, arrangements=True)

    start_ray(args.ray_address)
    shards = {name: work / f"shards-{name}" for name in ("train", "validation")}
    for name, out in shards.items():
        if not args.reuse:
            shutil.rmtree(out, ignore_errors=True)
        preprocess_fusion.run(preprocess_fusion.spec(pairs=str(folders[name]), out=out, codec="mel",
                                                     segment_seconds=args.segment_seconds, quiet=True))
    validation_segments = sum(ShardData.open(shards["validation"]).rows_by_pair.values())
    timings["data"] = time.perf_counter() - started
    default_config = build_config(work)
    folder_config = with_score_segments(default_config, validation_segments, work / "config-folder.json")

    test = TestPairs(folders["test"], 24_000)
    results: dict[str, dict] = {}
    for name, config, validation in (("split", default_config, None), ("folder", folder_config, shards["validation"])):
        summary, seconds = search(args, work, shards["train"], config, f"search-{name}", validation)
        timings[f"search {name}"] = seconds
        started = time.perf_counter()
        trials = read_trials(Path(summary.trials_csv))
        rows = [{"trial_id": row["trial_id"], "val_score": float(row["best_val_score"]), "last_epoch": int(row["last_epoch"]),
                 "test": test.score(row["best_checkpoint"])} for row in trials]
        timings[f"test scoring {name}"] = time.perf_counter() - started
        results[name] = {
            "trials": rows,
            "spearman": spearman([row["val_score"] for row in rows], [row["test"]["score"] for row in rows]),
            "best_config": summary.best_config,
            "best_val_score": summary.best_value,
            "search_seconds": seconds,
        }

    full: dict[str, dict] = {}
    trained = () if args.smoke else tuple(results)  # the smoke trains the default only (tests/test_tune.py trains a best config)
    for label, config in (("default", default_config), *((f"best of {name}", Path(results[name]["best_config"])) for name in trained)):
        checkpoint, seconds = train_full(work, shards["train"], shards["validation"], config, f"full-{label.replace(' ', '-')}",
                                         args.full_epochs, reuse=args.reuse)
        timings[f"train {label}"] = seconds
        full[label] = {"checkpoint": checkpoint, "test": test.score(checkpoint), "seconds": seconds}

    print(f"\n{args.samples} samples of up to {args.max_epochs} epochs (ASHA), space {Path(args.space).name}, seed 0; "
          f"{args.train_pairs} training, {args.validation_pairs} validation ({validation_segments} segments) and "
          f"{args.test_pairs} test pairs of {args.seconds:.0f} s")
    print(f"{'ranking by':<44}{'trials':>8}{'Spearman val/test':>20}{'best val_score':>16}")
    for name, label in (("split", "split of --data, 8 segments (before)"), ("folder", "--validation folder, every segment")):
        value = results[name]["spearman"]
        print(f"{label:<44}{len(results[name]['trials']):>8}{'n/a' if value is None else f'{value:.2f}':>20}"
              f"{results[name]['best_val_score'] or float('nan'):>16.4f}")
    print(f"\ntrained {args.full_epochs} epochs, scored on the test pairs:")
    print(f"{'config':<20}" + "".join(f"{name:>14}" for name in TEST_FIGURES) + f"{'/ default':>12}")
    for label, entry in full.items():
        values = entry["test"]
        print(f"{label:<20}" + "".join(f"{values.get(name, float('nan')):>14.3f}" for name in TEST_FIGURES)
              + f"{values['score'] / full['default']['test']['score']:>12.3f}")
    print("time: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items()))
    (work / "results.json").write_text(json.dumps({"args": vars(args), "searches": results, "full": full, "timings": timings}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
