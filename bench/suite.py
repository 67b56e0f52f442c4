"""Every benchmark, how ``python -m bench`` runs it, and the figures it reads from its results.

Each benchmark is a script of this folder that writes ``WORK/results.json``. An entry names
its arguments for a full run and for ``--quick`` (smaller corpora and fewer steps, the same
comparisons: every figure is still measured against its baseline from the same run) and
turns its results into ``Figure`` rows. A benchmark left out of ``--quick`` (``quick=None``)
is left out to keep the quick run under 5 minutes on 2 cores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

WORK = "{work}"  # stands for the benchmark's own work folder in an argument (alone or in a path)


@dataclass(frozen=True)
class Aim:
    """A bound on a figure's ratio to its baseline: at least or at most ``bound``."""

    at_least: bool
    bound: float

    def holds(self, ratio: float) -> bool:
        return ratio >= self.bound if self.at_least else ratio <= self.bound

    def __str__(self) -> str:
        return f"{'>=' if self.at_least else '<='} {self.bound}"


def at_least(bound: float) -> Aim:
    return Aim(True, bound)


def at_most(bound: float) -> Aim:
    return Aim(False, bound)


@dataclass(frozen=True)
class Figure:
    """One measured figure beside its baseline from the same run."""

    name: str  # what was measured
    value: float
    baseline: str  # what it is measured against
    baseline_value: float
    unit: str = ""
    aim: Aim | None = None  # on the ratio

    @property
    def ratio(self) -> float:
        if not self.baseline_value or not math.isfinite(self.baseline_value):
            return math.nan
        return self.value / self.baseline_value

    def aim_met(self) -> bool | None:
        """None where there is no aim or no ratio."""
        if self.aim is None or not math.isfinite(self.ratio):
            return None
        return self.aim.holds(self.ratio)


@dataclass(frozen=True)
class Benchmark:
    name: str
    script: str  # in bench/
    what: str  # one line for the results file
    full: tuple[str, ...]
    quick: tuple[str, ...] | None  # None: not part of --quick
    figures: Callable[[dict], list[Figure]]
    ray: bool = True  # takes --ray-address (joins the runner's Ray)

    def arguments(self, *, quick: bool, work: str) -> list[str]:
        chosen = self.quick if quick else self.full
        assert chosen is not None, f"{self.name} is not part of --quick"
        return [argument.replace(WORK, work) for argument in chosen]


# ------------------------------------------------------------------ figures


def preprocess_figures(results: dict) -> list[Figure]:
    rows = []
    for codec, result in results["codecs"].items():
        aimed = codec != "mel"  # mel is cheap to compute: I/O and scheduling dominate, no aim
        pipeline = result["pipeline"]["audio_seconds_per_second"]
        rows += [
            Figure(f"{codec}: pipeline speed", pipeline, "plain loop, same functions",
                   result["loop"]["audio_seconds_per_second"], "audio s/s", at_least(1.0) if aimed else None),
            Figure(f"{codec}: pipeline speed", pipeline, "the encoder alone (ceiling)",
                   result["ceiling"]["audio_seconds_per_second"], "audio s/s", at_least(0.85) if aimed else None),
        ]
    memory = results.get("memory")
    if memory:
        small, large = memory["runs"]
        rows.append(Figure(f"peak memory, {large['scale']}x the corpus", large["peak_megabytes"],
                           "the corpus once", small["peak_megabytes"], "MB", at_most(memory['aim'])))
    return rows


def train_figures(results: dict) -> list[Figure]:
    ray_train, plain = results["ray_train"], results["plain"]
    return [
        Figure("Ray Train, 1 worker", ray_train["1"]["steps_per_second"], "plain PyTorch loop, same threads",
               plain["steps_per_second"], "steps/s", at_least(results['aim'])),
        Figure("Ray Train, 2 workers", ray_train["2"]["segments_per_second"], "Ray Train, 1 worker",
               ray_train["1"]["segments_per_second"], "segments/s"),
    ]


def overhead_figures(results: dict) -> list[Figure]:
    rows = []
    for model, modes in results["results"].items():
        streamed, in_memory = modes["streamed"], modes["in memory"]
        rows += [
            Figure(f"{model}: per-epoch overhead, in memory", in_memory["mean_epoch_overhead_seconds"],
                   "streamed from the shards", streamed["mean_epoch_overhead_seconds"], "s"),
            Figure(f"{model}: whole run, in memory", in_memory["run_seconds"],
                   "streamed from the shards", streamed["run_seconds"], "s"),
        ]
    return rows


def fusion_quality_figures(results: dict) -> list[Figure]:
    from jingle.evaluation.shortcuts import ALL_SHORTCUTS

    means = results["means"]
    model, arrangement = means["model"], means["arrangement"]
    shortcuts = {name: row for name, row in means.items() if name in ALL_SHORTCUTS}
    best = max(shortcuts, key=lambda name: shortcuts[name]["score"])
    held_out = next(iter(results["variants"].values()))["sets"]["held-out"]["pairs"]
    rows = [
        Figure("model's score, held-out pairs", model["score"], f"best shortcut ({best})", shortcuts[best]["score"],
               aim=at_least(1.0)),
        Figure("model's score, held-out pairs", model["score"], "rendered arrangement", arrangement["score"],
               aim=at_least(1.0)),
        Figure("model's note-onset F1 against the input", model["note_onset_f1"], "rendered arrangement",
               arrangement["note_onset_f1"], aim=at_least(0.9)),
        Figure("model's pitch-class recall of the target", model["pitch_class_recall"], "rendered arrangement",
               arrangement["pitch_class_recall"], aim=at_least(0.9)),
        Figure("model's pitch-class precision", model["pitch_class_precision"], "rendered arrangement",
               arrangement["pitch_class_precision"]),
    ]
    decoded = means.get("arrangement_decoded")  # the arrangement through the codec, as the model's output is decoded
    if decoded:
        rows += [Figure(f"model's {label}", model[key], "arrangement through the codec", decoded[key], aim=at_least(0.9))
                 for key, label in (("note_onset_f1", "note-onset F1 against the input"),
                                    ("pitch_class_recall", "pitch-class recall of the target"))]
    rows.append(Figure("pairs where the model beats every shortcut", model["wins"], "held-out pairs",
                       float(held_out), "pairs", at_least(1.0)))
    return rows


def tune_figures(results: dict) -> list[Figure]:
    full, asha = results["full"], results["asha"]
    return [
        Figure("ASHA: trial-epochs", asha["trial_epochs"], "every trial to the end", full["trial_epochs"],
               "epochs", at_most(0.33)),
        Figure("ASHA: wall time", asha["seconds"], "every trial to the end", full["seconds"], "s"),
        Figure("ASHA: best val_score", asha["best"], "every trial to the end", full["best"], aim=at_least(0.95)),
    ]


def search_transfer_figures(results: dict) -> list[Figure]:
    full = results["full"]
    default = full["default"]["test"]["score"]
    return [Figure(f"{label} config, test score", entry["test"]["score"], "default config, test score",
                   default, aim=at_least(1.0)) for label, entry in full.items() if label != "default"]


def pointer_figures(results: dict) -> list[Figure]:
    rows = []
    for strength, figures in results.get("conform", {}).get("by_strength", {}).items():
        rows.append(Figure(f"conform, strength {float(strength):g}: frames within ±2", figures["network_within_2"],
                           "alignment (DTW)", figures["align_within_2"], "share"))
    for key, match in results.get("edit", {}).get("edl_match", {}).items():
        rows.append(Figure(f"edit [{key}]: EDL matches the rule's", match["greedy"], "the recording unedited",
                           match["identity"], "share of pairs"))
    return rows


def schedule_figures(results: dict) -> list[Figure]:
    return [Figure(f"nothing to do ({results['pairs']} pairs in)", results["nothing_to_do_s"], "first run",
                   results["first_run_s"], "s")]


def score_timing_figures(results: dict) -> list[Figure]:
    return [Figure(f"arrangement score per {results['seconds']:g} s clip", results["score_s"],
                   "the score less the transcription", results["score_s"] - results["transcribe_s"], "s")]


def decode_memory_figures(results: dict) -> list[Figure]:
    return [Figure(f"streamed decode, {row['minutes']:g} min pair: peak RSS", row["streamed_mb"],
                   "whole-file decode", row["whole_mb"], "MB") for row in results["lengths"] if row.get("whole_mb")]


# ------------------------------------------------------------------ the list

BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("preprocess", "preprocess.py", "jingle preprocess fusion against a plain loop and the encoder alone (mel, EnCodec)",
              full=("--codec", "both", "--memory", "--work", WORK),
              quick=("--codec", "encodec_24khz", "--minutes", "0.5", "--segment-seconds", "8", "--work", WORK),
              figures=preprocess_figures),
    Benchmark("train", "train.py", "Ray Train's loop against a plain PyTorch loop, and 2 workers against 1",
              full=("--steps", "20", "--work", WORK),
              quick=("--steps", "12", "--segment-seconds", "4", "--work", WORK),
              figures=train_figures),
    Benchmark("overhead", "overhead.py", "per-epoch overhead of training in memory against streaming from the shards",
              full=("--out", WORK, "--json", f"{WORK}/results.json"), quick=None, figures=overhead_figures),
    Benchmark("fusion quality", "fusion_quality.py", "the fusion model on held-out pairs against the shortcuts and the rendered arrangement",
              full=("--work", WORK),
              quick=("--epochs", "3", "--train-pairs", "4", "--held-out", "2", "--other-style", "0", "--seconds", "6", "--work", WORK),
              figures=fusion_quality_figures),
    Benchmark("search", "tune.py", "jingle tune with ASHA against every trial run to the end",
              full=("--work", WORK),
              quick=("--samples", "4", "--max-epochs", "3", "--train-pairs", "5", "--seconds", "3", "--segment-seconds", "1.5",
                     "--work", WORK),
              figures=tune_figures),
    Benchmark("pointer", "pointer.py", "the pointer network's conform against alignment, and its edits against the unedited recording",
              full=("--work", WORK), quick=("--smoke", "--skip", "edit", "--work", WORK), figures=pointer_figures),
    Benchmark("schedule", "schedule.py", "a scheduled preprocessing run with nothing to do against the first run",
              full=("--work", WORK), quick=None, figures=schedule_figures),
    Benchmark("score timing", "score_timing.py", "what hearing notes adds to the arrangement score's time",
              full=("--work", WORK), quick=None, figures=score_timing_figures, ray=False),
    Benchmark("decode memory", "decode_memory.py", "peak memory of decoding a pair, streamed against whole-file reads",
              full=("--work", WORK), quick=None, figures=decode_memory_figures, ray=False),
    Benchmark("search transfer", "search_transfer.py", "the searched configs trained in full against the default, on test pairs",
              full=("--work", WORK), quick=None, figures=search_transfer_figures),
)


def benchmark_named(name: str) -> Benchmark:
    for benchmark in BENCHMARKS:
        if benchmark.name == name:
            return benchmark
    raise KeyError(name)
