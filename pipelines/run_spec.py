"""What one training run or one search is, independent of the command line.

``jingle train TASK`` and ``jingle tune TASK`` parse their flags into a ``TrainSpec`` or a
``TuneSpec`` and call ``run(spec)``; the demo, the benchmarks and the tests build the specs
themselves. Both commands turn a config into the workers' plan through one builder,
``worker_plan``, so a search's trials run exactly what ``jingle train`` would run with the
same config (checkpoints every N steps, fault injection, the checkpoints kept).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jingle.core.config import SectionedConfig
from jingle.core.storage import Location
from jingle.pipelines.common import UsageError
from jingle.pipelines.loop import LoopSettings
from jingle.pipelines.registry import task_reference
from jingle.pipelines.tasks import Task, TaskPlan, get_task
from jingle.pipelines.tracking import TrackingRun
from jingle.pipelines.worker import WorkerPlan

SEARCHES = ("random", "optuna")
EARLY_STOPPING = ("asha", "none")


def task_options(task: Task, args: argparse.Namespace) -> dict[str, Any]:
    """The task's own flags (e.g. fusion's ``--codec-checkpoint``) among parsed arguments."""
    parser = argparse.ArgumentParser()
    task.add_arguments(parser)
    return {key: getattr(args, key) for key in vars(parser.parse_args([])) if hasattr(args, key)}


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``--override section.key=value`` flags -> dotted-key dict (values parsed as JSON)."""
    import json

    overrides = {}
    for item in items:
        key, separator, value = item.partition("=")
        if not separator:
            raise UsageError(f"--override {item!r} must look like section.key=value")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value  # a bare word, e.g. masking.strategy=energy
    return overrides


@dataclass(frozen=True, kw_only=True)
class TrainSpec:
    """One ``jingle train TASK`` run.

    Attributes:
        task: the model's task name (``fusion``, ``pointer``).
        data: the shard folder (a path or bucket URI) it trains on.
        config: the JSON training config file.
        overrides: dotted config keys to change (``--override``).
        validation: a held-out shard folder, or None: a split of ``data`` by pair id.
        storage: where checkpoints and the MLflow store go.
        name: the run's name (default ``TASK-<config file name>``).
        resume: require an earlier run of this name to continue.
        workers: training workers (None: one per GPU with ``use_gpu``, else 2).
        use_gpu: one GPU per worker.
        task_options: the task's own settings (fusion: ``codec_checkpoint``).
        num_cpus: CPUs of a local Ray this run starts (None: all).
        debug: tracebacks instead of one-line errors.
    """

    task: str
    data: str
    config: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    validation: str | None = None
    storage: Location = field(default_factory=lambda: Location.of("runs"))
    name: str | None = None
    resume: bool = False
    workers: int | None = None
    use_gpu: bool = False
    task_options: Mapping[str, Any] = field(default_factory=dict)
    num_cpus: int | None = None
    debug: bool = False

    def __post_init__(self):
        if not isinstance(self.storage, Location):
            object.__setattr__(self, "storage", Location.of(self.storage))
        if self.workers is not None and self.workers < 1:
            raise UsageError(f"--workers must be at least 1, got {self.workers}")

    @property
    def run_name(self) -> str:
        return self.name or f"{self.task}-{Path(self.config).stem}"

    def load_config(self) -> SectionedConfig:
        """The config file with the overrides applied (one-line errors)."""
        return get_task(self.task).config_class.from_file(self.config).with_overrides(dict(self.overrides))

    @classmethod
    def from_args(cls, task: str, args: argparse.Namespace) -> "TrainSpec":
        return cls(task=task, data=args.data, config=args.config, overrides=parse_overrides(args.override),
                   validation=args.validation, storage=args.storage, name=args.name, resume=args.resume,
                   workers=args.workers, use_gpu=bool(args.gpu), task_options=task_options(get_task(task), args),
                   num_cpus=args.num_cpus, debug=args.debug)


@dataclass(frozen=True, kw_only=True)
class TuneSpec:
    """One ``jingle tune TASK`` search.

    Attributes:
        task: the model's task name.
        data: the shard folder trials train on.
        space: the search space file (a YAML overlay on ``config``).
        config: the base training config file (default: the model's, ``pipelines/registry.py``).
        validation: a held-out shard folder that ranks the trials, or None: a split of ``data``.
        samples: trials to sample.
        max_epochs: epochs of a trial never stopped (ASHA's ``max_t``).
        search: ``random`` (seeded) or ``optuna`` (TPE).
        early_stopping: ``asha``, or ``none`` (every trial runs ``max_epochs``).
        grace_period: epochs every trial runs before ASHA may stop it.
        reduction_factor: ASHA keeps 1/R of the trials at each rung.
        workers_per_trial: training workers per trial (1: in the trial's own process).
        storage, name, resume, seed, task_options, num_cpus, debug: as the flags say.
    """

    task: str
    data: str
    space: str
    config: str | None = None
    validation: str | None = None
    samples: int = 8
    max_epochs: int = 10
    search: str = "random"
    early_stopping: str = "asha"
    grace_period: int = 1
    reduction_factor: float = 4.0
    workers_per_trial: int = 1
    storage: Location = field(default_factory=lambda: Location.of("runs"))
    name: str | None = None
    resume: bool = False
    seed: int = 0
    task_options: Mapping[str, Any] = field(default_factory=dict)
    num_cpus: int | None = None
    debug: bool = False

    def __post_init__(self):
        from jingle.pipelines.common import PROJECT_ROOT

        if not isinstance(self.storage, Location):
            object.__setattr__(self, "storage", Location.of(self.storage))
        if self.config is None:
            from jingle.pipelines.registry import get_model

            object.__setattr__(self, "config", str(PROJECT_ROOT / get_model(self.task).default_config))
        if self.samples < 1:
            raise UsageError(f"--samples must be at least 1, got {self.samples}")
        if self.grace_period < 1:
            raise UsageError(f"--grace-period must be at least 1 epoch, got {self.grace_period}")
        if self.max_epochs < self.grace_period:
            raise UsageError(f"--max-epochs ({self.max_epochs}) is below --grace-period ({self.grace_period}): "
                             "no trial could be stopped or finished")
        if not self.reduction_factor > 1:
            raise UsageError(f"--reduction-factor must be above 1, got {self.reduction_factor}")
        if self.workers_per_trial < 1:
            raise UsageError(f"--workers-per-trial must be at least 1, got {self.workers_per_trial}")
        if self.search not in SEARCHES:
            raise UsageError(f"--search must be one of {', '.join(SEARCHES)}, got {self.search!r}")
        if self.early_stopping not in EARLY_STOPPING:
            raise UsageError(f"--early-stopping must be one of {', '.join(EARLY_STOPPING)}, got {self.early_stopping!r}")

    @property
    def run_name(self) -> str:
        return self.name or f"tune-{self.task}-{Path(self.space).stem}"

    @classmethod
    def from_args(cls, task: str, args: argparse.Namespace) -> "TuneSpec":
        return cls(task=task, data=args.data, space=args.space, config=args.config, validation=args.validation,
                   samples=args.samples, max_epochs=args.max_epochs, search=args.search, early_stopping=args.early_stopping,
                   grace_period=args.grace_period, reduction_factor=args.reduction_factor,
                   workers_per_trial=args.workers_per_trial, storage=args.storage, name=args.name, resume=args.resume,
                   seed=args.seed, task_options=task_options(get_task(task), args), num_cpus=args.num_cpus, debug=args.debug)


def worker_plan(task: Task, config: SectionedConfig, data, *, train_ids: list[str], validation_ids: list[str], validation,
                task_plan: TaskPlan, run_dir: str | Location, tracking: TrackingRun | None = None) -> WorkerPlan:
    """The workers' plan of a run with ``config``: the one builder ``jingle train`` and every
    search trial use, so both read the same settings from ``config.training`` (epochs,
    checkpoints every N steps, fault injection, the in-memory limit)."""
    training = config.training
    return WorkerPlan(
        task=task.name,
        config=config.to_dict(),
        task_plan=task_plan,
        data=data.plan(task.data_columns(config), train_ids, validation_ids, max_in_memory_mb=training.max_in_memory_mb,
                       validation=validation),
        loop=LoopSettings(
            epochs=training.epochs,
            steps_per_epoch=task_plan.steps_per_epoch,
            checkpoint_every_steps=training.checkpoint_every_steps,
            fail_at_step=training.fail_at_step,
            run_dir=str(run_dir),
            selection=task.selection,
        ),
        tracking=tracking,
        task_reference=task_reference(task),
    )


# ------------------------------------------------------------------ from flags


def spec_from_args(spec_class, args: argparse.Namespace):
    """A spec whose fields are its command's flags (by their ``dest``), from parsed arguments."""
    from dataclasses import fields

    return spec_class(**{item.name: getattr(args, item.name) for item in fields(spec_class) if hasattr(args, item.name)})


def check_choice(flag: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise UsageError(f"{flag} must be one of {', '.join(map(str, choices))}, got {value!r}")


# ------------------------------------------------------------------ preprocessing


IF_BUSY = ("exit", "wait")


@dataclass(frozen=True, kw_only=True)
class PreprocessSpec:
    """What every ``jingle preprocess MODEL`` run states.

    Attributes:
        pairs: the pairs' folder or CSV/JSONL manifest.
        out: the shard folder (a path or bucket URI).
        rows_per_shard: rows per Parquet file.
        quiet: no progress lines.
        if_busy: ``exit`` (status 75) or ``wait`` when another run writes ``out``.
        verify: check every shard's sha256 against the manifest.
        num_cpus, debug: as the flags say.
    """

    pairs: str
    out: Location
    rows_per_shard: int
    quiet: bool = False
    if_busy: str = "exit"
    verify: bool = False
    num_cpus: int | None = None
    debug: bool = False

    def __post_init__(self):
        if not isinstance(self.out, Location):
            object.__setattr__(self, "out", Location.of(self.out))
        if self.rows_per_shard < 1:
            raise UsageError(f"--rows-per-shard must be at least 1, got {self.rows_per_shard}")
        check_choice("--if-busy", self.if_busy, IF_BUSY)

    @classmethod
    def from_args(cls, args: argparse.Namespace):
        return spec_from_args(cls, args)


@dataclass(frozen=True, kw_only=True)
class FusionPreprocessSpec(PreprocessSpec):
    """One ``jingle preprocess fusion`` run (WAV pairs -> latent shards).

    Attributes:
        codec: the latent codec's name; ``codec_checkpoint``: EnCodec weights.
        segment_seconds, hop_seconds, tail, min_tail_seconds: how recordings are cut
            (``datasets.audio.Segmenting``).
        latent_dtype: the stored latents' precision.
        encoder_actors, encoder_threads, encode_batch: the encoder pool (None: sized to the cluster).
    """

    rows_per_shard: int = 64
    codec: str = "mel"
    codec_checkpoint: str | None = None
    segment_seconds: float = 16.0
    hop_seconds: float | None = None
    tail: str = "drop"
    min_tail_seconds: float | None = None
    latent_dtype: str = "float32"
    encoder_actors: int | None = None
    encoder_threads: int | None = None
    encode_batch: int | None = None

    def __post_init__(self):
        super().__post_init__()
        self.segmenting  # noqa: B018 - refuses a bad cut before anything runs

    @property
    def segmenting(self):
        from jingle.datasets.audio import Segmenting

        try:
            return Segmenting(segment_seconds=self.segment_seconds, hop_seconds=self.hop_seconds, tail=self.tail,
                              min_tail_seconds=self.min_tail_seconds)
        except ValueError as error:
            raise UsageError(str(error)) from None


@dataclass(frozen=True, kw_only=True)
class PointerPreprocessSpec(PreprocessSpec):
    """One ``jingle preprocess pointer`` run (raw/edit pairs -> log-mel rows with pointers).

    Attributes:
        config: a pointer config whose ``features`` and ``alignment`` apply (None: defaults).
        tasks: concurrent featurize tasks (None: the cluster's CPUs).
    """

    rows_per_shard: int = 16
    config: str | None = None
    tasks: int | None = None


# ------------------------------------------------------------------ inference


def check_pair_choice(pair: Any) -> None:
    """``--pair``: best, mean or a window-pair index of 0 or more."""
    if isinstance(pair, bool) or not (pair in ("best", "mean") or (isinstance(pair, int) and pair >= 0)):
        raise UsageError(f"--pair must be best, mean or a pair index of 0 or more, got {pair!r}")


@dataclass(frozen=True, kw_only=True)
class FusingSpec:
    """What every command that fuses with a fusion checkpoint states (``jingle fuse``, ``jingle
    evaluate fusion --checkpoint``): the codec's weights, the adaptive agent's window pair
    (best, mean or an index), the device, the Ray actors of a folder, the local Ray's CPUs."""

    codec_checkpoint: str | None = None
    pair: str | int = "best"
    device: str | None = None
    actors: int | None = None
    num_cpus: int | None = None
    debug: bool = False

    def __post_init__(self):
        check_pair_choice(self.pair)
        if self.device is not None:
            check_choice("--device", self.device, ("cpu", "cuda"))


@dataclass(frozen=True, kw_only=True)
class FuseSpec(FusingSpec):
    """One ``jingle fuse``: a pair (``input``, ``target`` -> ``output``) or a folder
    (``batch`` -> ``out``), with a fusion checkpoint; the fields are the command's flags."""

    checkpoint: str
    input: str | None = None
    target: str | None = None
    output: str | None = None
    batch: str | None = None
    out: str | None = None

    def __post_init__(self):
        """One pair (INPUT.wav TARGET.wav -o OUT.wav) or --batch PAIRS_DIR --out DIR, not a mix."""
        super().__post_init__()
        if self.batch is not None:
            extra = [name for name, value in (("INPUT.wav", self.input), ("-o", self.output)) if value is not None]
            if extra:
                raise UsageError(f"--batch takes no {' or '.join(extra)}: use --batch PAIRS_DIR --out DIR")
            if self.out is None:
                raise UsageError("--batch needs --out DIR for the fused files")
            if self.actors is not None and self.actors < 1:
                raise UsageError(f"--actors must be at least 1, got {self.actors}")
            return
        if self.out is not None or self.actors is not None:
            raise UsageError("--out and --actors go with --batch PAIRS_DIR; for one pair use INPUT.wav TARGET.wav -o OUT.wav")
        if self.input is None or self.target is None or self.output is None:
            raise UsageError("give INPUT.wav TARGET.wav -o OUT.wav, or --batch PAIRS_DIR --out DIR")
        if Path(self.output).suffix.lower() not in (".wav", ".wave"):
            raise UsageError(f"-o {self.output} must end in .wav (OUT.png and OUT.json are written beside it)")


@dataclass(frozen=True, kw_only=True)
class EvaluateFusionSpec(FusingSpec):
    """One ``jingle evaluate fusion``: given files (``files``: input, target, outputs...) or
    a checkpoint fused over ``pairs`` and scored; the fields are the command's flags."""

    out: str
    files: tuple[str, ...] = ()
    checkpoint: str | None = None
    pairs: str | None = None
    compare: tuple[str, ...] = ()  # NAME=FOLDER
    arrangement: str | None = None
    arrangements: str | None = None

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "files", tuple(map(str, self.files)))
        object.__setattr__(self, "compare", tuple(self.compare))


@dataclass(frozen=True, kw_only=True)
class ConformSpec:
    """One ``jingle conform``: the edit decision list of ``edited`` against ``raw``."""

    raw: str
    edited: str
    out: str
    checkpoint: str | None = None
    method: str = "network"
    decode: str = "path"
    jump_penalty: float | None = None
    config: str | None = None
    device: str | None = None
    num_cpus: int | None = None
    debug: bool = False

    def __post_init__(self):
        check_choice("--method", self.method, ("network", "align"))
        check_choice("--decode", self.decode, ("path", "argmax"))
        if self.method == "network" and not self.checkpoint:
            raise UsageError("--checkpoint is needed with --method network (or use --method align)")


@dataclass(frozen=True, kw_only=True)
class EditSpec:
    """One ``jingle edit``: a new edit of ``raw`` by an edit-mode pointer checkpoint."""

    raw: str
    out: str
    checkpoint: str
    beam: int = 1
    max_seconds: float | None = None
    crossfade_ms: float = 10.0
    device: str | None = None
    num_cpus: int | None = None
    debug: bool = False

    def __post_init__(self):
        if self.beam < 1:
            raise UsageError(f"--beam must be at least 1, got {self.beam}")
