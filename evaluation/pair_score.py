"""One pair's outputs scored against its sources and the shortcuts: ``score_pair``.

The one place where outputs meet the shortcuts, used alike by validation (``val_score``,
``training/fusion_training.py``), ``jingle evaluate fusion`` (``pipelines/fusion_evaluation.py``)
and the benchmarks. A pair is prepared once (its sources analysed and transcribed, its
shortcuts made and scored) and any number of outputs are then scored against it.

Shape letters: S samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from jingle.evaluation.arrangement import ArrangementScore, SourceFeatures, analyse_sources, score_output
from jingle.evaluation.shortcuts import ALL_SHORTCUTS, reference_shortcuts, shortcut_outputs


@dataclass(frozen=True, eq=False)
class PreparedPair:
    """A pair's analysed sources, and its shortcuts with their scores."""

    sources: SourceFeatures
    sample_rate: int  # of the shortcuts' audio
    shortcuts: dict[str, np.ndarray]  # name -> [S]
    shortcut_scores: dict[str, ArrangementScore]


@dataclass(frozen=True)
class PairScore:
    """Scores of a pair's outputs, in the order given, and of its shortcuts."""

    outputs: dict[str, ArrangementScore]
    shortcuts: dict[str, ArrangementScore] = field(default_factory=dict)

    def best_shortcut(self) -> tuple[str, float]:
        """(name, score) of the highest-scoring shortcut."""
        name = max(self.shortcuts, key=lambda key: self.shortcuts[key].score)
        return name, self.shortcuts[name].score

    def beats_every_shortcut(self, name: str) -> bool:
        return self.outputs[name].score > self.best_shortcut()[1]


def prepare_pair(
    input: np.ndarray, target: np.ndarray, sample_rate: int, *, arrangement: np.ndarray | None = None, seed: int = 0,
    shortcuts: bool = True,
) -> PreparedPair:
    """Analyse one pair and make and score its shortcuts.

    Args:
        input, target: [S] mono at ``sample_rate``.
        arrangement: the pair's reference arrangement when known ([S] at ``sample_rate``):
            its time-smeared copy becomes the shortcut ``smeared_arrangement``.
        seed: of the shortcuts' noise and Griffin-Lim.
        shortcuts: False: the sources only (no shortcut is made or scored).
    """
    sources = analyse_sources(input, target, sample_rate)
    made = shortcut_outputs(input, target, sample_rate, seed=seed) if shortcuts else {}
    if arrangement is not None and shortcuts:
        made.update(reference_shortcuts(arrangement, sample_rate, seed=seed))
    scores = {name: score_output(sources, audio, sample_rate) for name, audio in made.items()}
    return PreparedPair(sources, sample_rate, made, scores)


def score_pair(pair: PreparedPair, outputs: Mapping[str, np.ndarray], sample_rate: int) -> PairScore:
    """Score ``outputs`` (name -> [S] mono at ``sample_rate``) against a prepared pair.

    An output holding NaN or inf scores the floor (``score_output``), so a diverged model
    is ranked last rather than stopping a validation or a report.

    Raises:
        ValueError: an output has a shortcut's name.
    """
    clashes = sorted(set(outputs) & set(ALL_SHORTCUTS))
    if clashes:
        raise ValueError(f"output name(s) {clashes} are shortcut names; rename the output(s)")
    scored = {name: score_output(pair.sources, np.asarray(audio), sample_rate) for name, audio in outputs.items()}
    return PairScore(scored, dict(pair.shortcut_scores))
