"""Fused audio scored against its sources and the shortcuts: what ``jingle evaluate
fusion`` writes (``pipelines/evaluate_fusion.py`` is its command line and Ray glue).

Per pair, every output (a model's, another system's, a hand-made one) and the shortcuts
a loss can settle on (``evaluation/shortcuts.py``: copies, a mix, noise, the target under the
input's loudness, the target smeared and pulsing; with a reference arrangement, its
smeared copy) are scored with the one fixed arrangement score (``evaluation/pair_score.py``),
so a table shows at a glance whether an output beats doing nothing clever.
``DIR/report.json`` holds every figure; ``DIR/report.md`` a table per pair (and, for
several pairs, the mean score and note figures per output); ``DIR/pictures/<pair>.png``
the onset envelopes and transcribed notes of the sources and outputs, what the score hears.

Shape letters: S samples, T frames.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jingle.datasets.audio import AudioError, read_mono
from jingle.evaluation.arrangement import ANALYSIS_SAMPLE_RATE, FRAME_RATE, HIGHER_IS_BETTER, SCORE_FIGURES, analyse_clip
from jingle.evaluation.pair_score import prepare_pair, score_pair
from jingle.evaluation.shortcuts import ALL_SHORTCUTS

# Columns of the Markdown tables after the score: the six parts, the note figures' parts,
# then note 003's measure.
NOTE_COLUMNS = ("note_onset_precision", "note_onset_recall", "pitch_class_precision", "pitch_class_recall", "notes_per_second")
TABLE_FIGURES = (*SCORE_FIGURES, *NOTE_COLUMNS, "envelope_cost")


@dataclass
class PairEvaluation:
    """One pair's scored outputs, in the order given, then the shortcuts."""

    input: str
    target: str
    outputs: list[dict[str, Any]] = field(default_factory=list)  # {"name", "score", "figures", ...}
    pair_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        values = {"input": self.input, "target": self.target, "outputs": self.outputs}
        return values if self.pair_id is None else {"pair_id": self.pair_id, **values}

    @property
    def label(self) -> str:
        return self.pair_id or f"{Path(self.input).name} + {Path(self.target).name}"


def evaluate_audio(
    input_audio: np.ndarray,
    target_audio: np.ndarray,
    outputs: Mapping[str, np.ndarray],
    sample_rate: int,
    *,
    input_path: str,
    target_path: str,
    details: Mapping[str, Mapping[str, Any]] | None = None,
    pair_id: str | None = None,
    seed: int = 0,
    arrangement: np.ndarray | None = None,
) -> tuple[PairEvaluation, dict[str, np.ndarray]]:
    """Score ``outputs`` and the shortcuts against one pair's sources.

    Args:
        input_audio, target_audio: [S] mono at ``sample_rate``.
        outputs: name -> [S] mono at ``sample_rate`` (names may not be shortcut names).
        input_path, target_path: recorded in the report.
        details: name -> extra keys of that output's entry (its path, the gain applied...).
        seed: of the shortcuts' noise.
        arrangement: the pair's reference arrangement ([S] at ``sample_rate``), whose
            smeared copy is scored as a shortcut.
    Returns:
        the evaluation, and the shortcuts' audio (name -> [S]) for the picture.
    """
    prepared = prepare_pair(input_audio, target_audio, sample_rate, arrangement=arrangement, seed=seed)
    scores = score_pair(prepared, outputs, sample_rate)
    evaluation = PairEvaluation(str(input_path), str(target_path), pair_id=pair_id)
    for name, result in {**scores.outputs, **scores.shortcuts}.items():
        entry = {"name": name, "score": result.score, "figures": result.figures}
        if name in scores.shortcuts:
            entry["shortcut"] = True
        entry.update((details or {}).get(name, {}))
        evaluation.outputs.append(entry)
    return evaluation, prepared.shortcuts


def read_clip(path: str | os.PathLike, role: str) -> np.ndarray:
    """One file, mono at the analysis rate [S]; an error names its role and path."""
    try:
        return read_mono(path, ANALYSIS_SAMPLE_RATE)
    except AudioError as error:
        raise AudioError(f"{role} {path}: {error}") from None


def output_names(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Each output file's stem, the name it has in the report; names must be distinct and
    not a shortcut's."""
    names = [Path(path).stem for path in paths]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"two outputs are named {name!r}: give the files distinct names")
        if name in ALL_SHORTCUTS:
            raise ValueError(f"output {name!r} has a shortcut's name ({', '.join(ALL_SHORTCUTS)}): rename the file")
    return names


def evaluate_files(input_path: str, target_path: str, outputs: Mapping[str, str | os.PathLike], *,
                   pair_id: str | None = None, picture: str | os.PathLike | None = None,
                   details: Mapping[str, Mapping[str, Any]] | None = None,
                   arrangement: str | os.PathLike | None = None,
                   decoded_arrangement: Callable[[np.ndarray, int], np.ndarray] | None = None) -> PairEvaluation:
    """Read a pair and its outputs (name -> file; any rate or channel count) and score
    them; draw the pair's picture to ``picture`` when given.

    Args:
        arrangement: the pair's reference arrangement: scored as ``arrangement``, and its
            time-smeared copy as the shortcut ``smeared_arrangement``.
        decoded_arrangement: ``(audio, sample_rate) -> audio``, the codec's round trip:
            the arrangement through it is scored as ``arrangement_decoded`` (what a model's
            output goes through on its way to audio).

    Raises:
        AudioError: a file is missing or unreadable (the message names it).
        ValueError: an output has a shortcut's name.
    """
    input_audio, target_audio = read_clip(input_path, "input"), read_clip(target_path, "target")
    paths = dict(outputs)
    if arrangement is not None:
        paths["arrangement"] = arrangement
    audio = {name: read_clip(path, f"output {name}") for name, path in paths.items()}
    extra = {name: {"path": str(path), **(details or {}).get(name, {})} for name, path in paths.items()}
    if arrangement is not None and decoded_arrangement is not None:
        audio["arrangement_decoded"] = decoded_arrangement(audio["arrangement"], ANALYSIS_SAMPLE_RATE)
    evaluation, shortcuts = evaluate_audio(
        input_audio, target_audio, audio, ANALYSIS_SAMPLE_RATE, input_path=str(input_path), target_path=str(target_path),
        details=extra, pair_id=pair_id, arrangement=audio.get("arrangement"),
    )
    if picture is not None:
        pair_picture(picture, input_audio, target_audio, {**audio, **shortcuts}, title=evaluation.label)
    return evaluation


# ------------------------------------------------------------------ the report


def write_report(out_dir: str | os.PathLike, pairs: Sequence[PairEvaluation]) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    document = {"higher_is_better": HIGHER_IS_BETTER, "pairs": [pair.to_dict() for pair in pairs]}
    json_path, markdown_path = out_dir / "report.json", out_dir / "report.md"
    json_path.write_text(json.dumps(_json_safe(document), indent=2) + "\n")
    markdown_path.write_text(markdown_report(pairs))
    return json_path, markdown_path


def markdown_report(pairs: Sequence[PairEvaluation]) -> str:
    lines = [
        "# Arrangement scores",
        "",
        "Score: geometric mean of rhythm (from the input), harmony and timbre (from the target), newness and "
        "movement, each in [0, 1]; higher is better (evaluation/arrangement.py). Shortcuts are marked *.",
        "",
    ]
    if len(pairs) > 1:
        lines += summary_table(pairs) + [""]
    for pair in pairs:
        lines += [f"## {pair.label}", "", f"input `{pair.input}`, target `{pair.target}`", ""]
        lines += _table(pair.outputs) + [""]
    return "\n".join(lines)


SUMMARY_FIGURES = ("rhythm", "harmony", "clarity", "pitch_class_precision", "pitch_class_recall")


def summary_table(pairs: Sequence[PairEvaluation]) -> list[str]:
    """Mean score and note figures per output name over the pairs, and on how many pairs
    each output beats every shortcut."""
    names: list[str] = []
    for pair in pairs:
        names += [entry["name"] for entry in pair.outputs if entry["name"] not in names]
    header = "| output | mean score | " + " | ".join(SUMMARY_FIGURES) + " | pairs | beats every shortcut |"
    lines = ["## All pairs", "", header, "| --- | ---: | " + "---: | " * len(SUMMARY_FIGURES) + "---: | ---: |"]
    for name in names:
        entries, wins, shortcut = [], 0, False
        for pair in pairs:
            entry = next((e for e in pair.outputs if e["name"] == name), None)
            if entry is None:
                continue
            entries.append(entry)
            shortcut = shortcut or bool(entry.get("shortcut"))
            best_shortcut = max(e["score"] for e in pair.outputs if e.get("shortcut"))
            wins += entry["score"] > best_shortcut
        means = [_mean_figure(entries, figure) for figure in SUMMARY_FIGURES]
        beats = "" if shortcut else f"{wins}/{len(entries)}"
        label = f"{name}*" if shortcut else name
        score = np.mean([entry["score"] for entry in entries])
        lines.append(f"| {label} | {score:.3f} | " + " | ".join(_cell(value) for value in means) + f" | {len(entries)} | {beats} |")
    return lines


def _mean_figure(entries: Sequence[Mapping[str, Any]], figure: str) -> float | None:
    values = [entry["figures"].get(figure) for entry in entries]
    values = [value for value in values if value is not None]
    return float(np.mean(values)) if values else None


def _table(outputs: Sequence[Mapping[str, Any]]) -> list[str]:
    header = "| output | score | " + " | ".join(TABLE_FIGURES) + " |"
    lines = [header, "| --- | ---: | " + " | ".join("---:" for _ in TABLE_FIGURES) + " |"]
    for entry in outputs:
        label = f"{entry['name']}*" if entry.get("shortcut") else entry["name"]
        cells = [_cell(entry["figures"].get(name)) for name in TABLE_FIGURES]
        lines.append(f"| {label} | {entry['score']:.3f} | " + " | ".join(cells) + " |")
    return lines


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _json_safe(value: Any) -> Any:
    """NaN and inf have no JSON spelling: they become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


# ------------------------------------------------------------------ the picture


def picture_path(out_dir: str | os.PathLike, label: str) -> Path:
    """``DIR/pictures/<label>.png``, the label's folders kept and nothing escaping ``DIR``."""
    parts = [part for part in Path(label.replace("\\", "/")).parts if part not in ("/", ".", "..")]
    return Path(out_dir) / "pictures" / f"{'/'.join(parts) or 'pair'}.png"



def pair_picture(path: str | os.PathLike, input_audio: np.ndarray, target_audio: np.ndarray,
                 outputs: Mapping[str, np.ndarray], *, title: str = "") -> Path:
    """A PNG with one row per clip (sources, then outputs): its onset envelope (left) and
    chromagram (right), the features the rhythm and harmony figures compare (the chroma
    centred and normalised per frame, as the harmony figure correlates it: bright pitch
    classes are above the frame's mean). Clips are at the analysis rate."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from jingle.pipelines.figures import save_figure

    rows = {"input": input_audio, "target": target_audio, **outputs}
    figure = Figure(figsize=(14, 1.8 * len(rows) + 0.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(rows), 2, sharex=True, squeeze=False, width_ratios=(1, 1))
    longest = 0.0
    for (label, audio), (onset_axis, chroma_axis) in zip(rows.items(), axes):
        features = analyse_clip(audio, ANALYSIS_SAMPLE_RATE)
        seconds = len(audio) / ANALYSIS_SAMPLE_RATE
        longest = max(longest, seconds)
        times = np.arange(len(features.onset)) / FRAME_RATE
        onset_axis.plot(times, features.onset, color="tab:blue", linewidth=0.8)
        onset_axis.set_title(f"{label}: onset strength", fontsize=10)
        chroma_axis.imshow(
            features.chroma,  # [C, T]
            origin="lower", aspect="auto", interpolation="nearest", cmap="magma",
            extent=(0.0, len(features.onset) / FRAME_RATE, -0.5, 11.5), vmin=0.0, vmax=1.0,
        )
        chroma_axis.set_yticks(range(12), ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"], fontsize=6)
        chroma_axis.set_title(f"{label}: chromagram", fontsize=10)
    for axis in axes[-1]:
        axis.set_xlabel("time (s)")
        axis.set_xlim(0.0, max(longest, 1e-3))
    return save_figure(figure, path, title)
