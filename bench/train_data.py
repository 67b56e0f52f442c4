"""The data of bench/train.py: how many generated pairs and steps a measurement needs, and
the mel shards it trains on (made by the pipeline's own preprocessing)."""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from jingle.datasets.synth import CorpusSpec, write_fusion_corpus
from jingle.training.fusion_config import FusionTrainConfig
from jingle.pipelines import preprocess_fusion
from jingle.pipelines.shard_data import split_pair_ids

CORPUS_SEED = 0
CODEC = "mel"  # EnCodec's audio-domain losses would measure its decoder, not the loop
WINDOWS_PER_PAIR = 2  # pairs of ~2 segments: ~32 s at the default 16 s, as bench/preprocess.py


@dataclass(frozen=True)
class DataPlan:
    """The generated pairs: one validation pair (none when the config holds none out) and
    ``train_pairs`` training pairs, in the split the pipeline will make.

    Each pair lasts ``windows_per_pair`` segments plus a quarter to three quarters of a
    second, so it yields exactly that many windows.
    """

    segment_seconds: float
    train_pairs: int
    validation_fraction: float  # from the config: the pipeline splits by it
    split_seed: int  # training.seed, which seeds the split
    windows_per_pair: int = WINDOWS_PER_PAIR
    corpus_seed: int = CORPUS_SEED

    @property
    def validation_pairs(self) -> int:
        return 1 if self.validation_fraction > 0 else 0

    def spec(self) -> CorpusSpec:
        whole_windows_seconds = self.windows_per_pair * self.segment_seconds
        return CorpusSpec(
            pairs=1, min_seconds=whole_windows_seconds + 0.25, max_seconds=whole_windows_seconds + 0.75, seed=self.corpus_seed
        )

    def folder_name(self) -> str:
        return (
            f"train-corpus-{self.train_pairs}x{self.windows_per_pair}x{self.segment_seconds:g}s"
            f"-val{self.validation_fraction:g}-split{self.split_seed}-seed{self.corpus_seed}"
        )


@dataclass(frozen=True)
class StepPlan:
    """How many steps each Ray Train run takes and when its loop reports.

    The loop reports (with a checkpoint) every ``timed_steps`` steps: the first report ends
    the warm-up, and each later one closes a timed stretch of ``timed_steps`` steps. Two
    workers take ``epoch_steps`` steps each (one stretch); one worker, on the same data,
    twice as many (three stretches).

    Reports are this far apart, rather than a few steps, because Ray Train's controller
    takes a worker's reports one at a time, polling every ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``
    (2 s): a loop that reports more often waits for it.
    """

    timed_steps: int  # --steps

    @property
    def report_every(self) -> int:
        return self.timed_steps

    @property
    def epoch_steps(self) -> int:  # per worker, with 2 workers; the +1 keeps the second report mid-epoch
        return 2 * self.report_every + 1


def plan_data(steps: StepPlan, *, batch_size: int, segment_seconds: float, config: FusionTrainConfig) -> DataPlan:
    """Enough training pairs that each of 2 workers fills ``steps.epoch_steps`` batches."""
    return DataPlan(
        segment_seconds=segment_seconds,
        train_pairs=math.ceil(2 * steps.epoch_steps * batch_size / WINDOWS_PER_PAIR),
        validation_fraction=config.training.validation_fraction,
        split_seed=config.training.seed,
    )


def generated_pair_id(index: int) -> str:
    return f"pair_{index:04d}"  # how write_fusion_corpus names pair ``index`` (checked when written)


def choose_pairs(plan: DataPlan) -> list[int]:
    """Indices of the pairs to generate: ``plan.train_pairs`` that the pipeline will train on
    and the first that it will hold out.

    ``split_pair_ids`` puts a pair in validation by a hash of its id alone, so a pair is
    classified by splitting it on its own; one validation pair keeps validation short.
    """
    training, validation = [], []
    index = 0
    while len(training) < plan.train_pairs or len(validation) < plan.validation_pairs:
        _, held_out = split_pair_ids([generated_pair_id(index)], plan.validation_fraction, plan.split_seed)
        if not held_out and len(training) < plan.train_pairs:
            training.append(index)
        elif held_out and not validation:
            validation.append(index)
        index += 1
    return validation + training


def make_shards(work: Path, plan: DataPlan) -> Path:
    """Generate the corpus and preprocess it, or reuse what a previous run left."""
    root = work / plan.folder_name()
    shards = root / "shards"
    stamp = root / "data.json"
    if stamp.exists() and json.loads(stamp.read_text()) == asdict(plan):
        print(f"[bench] reusing the corpus and shards in {root}", file=sys.stderr)
        return shards
    shutil.rmtree(root, ignore_errors=True)
    started = time.perf_counter()
    indices = choose_pairs(plan)
    lines = ["pair_id,input,target"]
    for index in indices:
        pair_id = generated_pair_id(index)
        written = write_fusion_corpus(root / "pairs", plan.spec(), first_index=index)
        if written != [pair_id]:
            raise AssertionError(f"write_fusion_corpus named pair {index} {written}, not {pair_id}")
        lines.append(f"{pair_id},{root / 'pairs' / 'input' / f'{pair_id}.wav'},{root / 'pairs' / 'target' / f'{pair_id}.wav'}")
    (root / "pairs.csv").write_text("\n".join(lines) + "\n")
    summary = preprocess_fusion.run(preprocess_fusion.spec(pairs=str(root / "pairs.csv"), out=shards, codec=CODEC,
                                                           segment_seconds=plan.segment_seconds, quiet=True))
    if summary.rejects or summary.segments_written != len(indices) * plan.windows_per_pair:
        raise RuntimeError(f"preprocessing wrote {summary.segments_written} segments, not {len(indices) * plan.windows_per_pair}; rejects: {summary.rejects[:3]}")
    stamp.write_text(json.dumps(asdict(plan)))  # last, so that interrupted shards are made again
    print(
        f"[bench] generated and preprocessed {len(indices)} pairs of ~{plan.windows_per_pair * plan.segment_seconds:g} s "
        f"in {root} in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    return shards
