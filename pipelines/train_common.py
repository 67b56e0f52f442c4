"""Ray Train machinery shared by the fusion and pointer trainings.

Driver side: split pair ids into train and validation, build streaming Ray Datasets over
the shards, open (or reopen) the MLflow run, and launch a ``TorchTrainer``. Worker side:
restore the latest checkpoint, report metrics and checkpoints, log to MLflow from rank 0,
and the fault injection the tests use. The model-specific loop lives in its pipeline
(``train_fusion``) and only wires these.

Resume: Ray Train V2 continues a run that is started again with the same ``--storage`` and
name from its latest reported checkpoint; the step counter travels in the checkpoint.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import ray
import ray.train

from datasets.pairs import InputError
from datasets.shards import read_manifest, shard_paths
from models.checkpoints import TrainingState, load_state, save_state

VALIDATION_METRIC = "val_total"
MLFLOW_DB = "mlflow.db"
MLFLOW_ARTIFACTS = "mlflow-artifacts"


# ----------------------------------------------------------------------------- data


def split_pair_ids(pair_ids: list[str], validation_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic split by pair id: a pair's segments are all on one side.

    A pair goes to validation when a hash of (seed, id) falls under the fraction, so adding
    pairs later never moves an existing pair to the other side. With at least two pairs
    and a non-zero fraction, each side gets at least one.
    """
    def score(pair_id: str) -> float:
        digest = hashlib.sha256(f"{seed}\0{pair_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    ranked = sorted(pair_ids, key=score)
    validation = [pair_id for pair_id in ranked if score(pair_id) < validation_fraction]
    if validation_fraction > 0 and len(pair_ids) >= 2:
        if not validation:
            validation = ranked[:1]
        if len(validation) == len(pair_ids):
            validation = validation[:-1]
    held_out = set(validation)
    return sorted(p for p in pair_ids if p not in held_out), sorted(validation)


@dataclass(frozen=True)
class ShardData:
    """The shard folder a training reads, described from its manifest."""

    root: str
    kind: str
    settings: dict
    rows_by_pair: dict[str, int]

    @property
    def codec(self) -> dict:
        return self.settings["codec"]

    @property
    def segmenting(self) -> dict:
        return self.settings["segmenting"]

    @classmethod
    def open(cls, root: str | os.PathLike, kind: str = "fusion") -> "ShardData":
        root = str(Path(root).resolve())
        if not Path(root).is_dir():
            raise InputError(f"--data {root} does not exist")
        manifest = read_manifest(root)
        if manifest.get("kind") != kind:
            raise InputError(f"--data {root} holds {manifest.get('kind')!r} shards; jingle train {kind} needs jingle preprocess {kind} output")
        rows: dict[str, int] = {}
        for entry in manifest["files"].values():
            for pair_id, indices in entry["items"].items():
                rows[pair_id] = rows.get(pair_id, 0) + len(indices)
        if not rows:
            raise InputError(f"--data {root} holds no rows: run jingle preprocess {kind} first")
        return cls(root, kind, manifest["settings"], rows)

    def datasets(self, train_ids: list[str], validation_ids: list[str], columns: list[str]) -> dict[str, ray.data.Dataset]:
        """Streaming datasets of the two sides (never materialised on the driver)."""
        dataset = ray.data.read_parquet(shard_paths(self.root), num_cpus=DATA_TASK_CPUS).select_columns(columns + ["pair_id"])
        # Progress bars of the workers' splits would interleave with training logs, every epoch.
        dataset.context.enable_progress_bars = False
        sides = {"train": set(train_ids), "validation": set(validation_ids)}
        return {
            name: dataset.filter(_PairFilter(ids), num_cpus=DATA_TASK_CPUS).select_columns(columns)
            for name, ids in sides.items()
            if ids
        }


class _PairFilter:
    """Row filter keeping one side's pair ids (a class so Ray pickles the set once)."""

    def __init__(self, pair_ids: set[str]) -> None:
        self.pair_ids = pair_ids

    def __call__(self, row: dict) -> bool:
        return row["pair_id"] in self.pair_ids


# -------------------------------------------------------------------------- tracking


def tracking_uri(storage: str) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else a SQLite store under the storage folder."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(storage).resolve() / MLFLOW_DB}"


def open_tracking_run(*, storage: str, experiment: str, run_name: str, params: dict[str, Any]) -> str:
    """The MLflow run of this training (created once; a resumed run gets the same one)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri(storage))
    found = client.get_experiment_by_name(experiment)
    if found is None:
        artifacts = (Path(storage).resolve() / MLFLOW_ARTIFACTS).as_uri()
        experiment_id = client.create_experiment(experiment, artifact_location=artifacts)
    else:
        experiment_id = found.experiment_id
    runs = client.search_runs([experiment_id], filter_string=f"tags.`jingle.run` = '{run_name}'", max_results=1)
    if runs:
        return runs[0].info.run_id
    run = client.create_run(experiment_id, run_name=run_name, tags={"jingle.run": run_name})
    client.log_batch(run.info.run_id, params=[_param(key, value) for key, value in _flatten(params).items()])
    return run.info.run_id


def _param(key: str, value: Any):
    from mlflow.entities import Param

    return Param(key, str(value)[:6000])


def _flatten(values: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class Tracker:
    """MLflow logging from the rank-0 worker (other ranks log nothing)."""

    def __init__(self, uri: str, run_id: str, *, enabled: bool) -> None:
        self.run_id, self.enabled = run_id, enabled
        if enabled:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(uri)

    def metrics(self, values: dict[str, float], step: int) -> None:
        if not self.enabled:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, step) for key, value in values.items() if isinstance(value, (int, float))]
        for start in range(0, len(batch), 900):  # MLflow caps a batch at 1000 metrics
            self.client.log_batch(self.run_id, metrics=batch[start : start + 900])

    def artifact(self, path: str | os.PathLike, folder: str | None = None) -> None:
        if self.enabled:
            self.client.log_artifact(self.run_id, str(path), artifact_path=folder)


# ------------------------------------------------------------------- checkpoints


def restore(kind: str, codec_id: str) -> TrainingState | None:
    """The latest checkpoint of this run (after a failure or a rerun), or None.

    A rerun under the same name on shards of another codec is refused (CheckpointError).
    """
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        return load_state(directory, kind=kind, codec_id=codec_id)


def report(metrics: dict[str, float], state: TrainingState | None) -> None:
    """Every worker calls this the same number of times; rank 0 passes the checkpoint."""
    if state is None:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as directory:
        save_state(directory, state)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


def record_worker(run_dir: str, rank: int) -> None:
    """Write ``RUN/workers/rank-N.json`` (node id, host, pid): where each worker ran."""
    import json
    import socket

    folder = Path(run_dir) / "workers"
    folder.mkdir(parents=True, exist_ok=True)
    info = {"rank": rank, "node_id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(), "pid": os.getpid()}
    (folder / f"rank-{rank}.json").write_text(json.dumps(info))


def maybe_fail(step: int, fail_at_step: int | None, marker_dir: str) -> None:
    """Fault injection: the last worker dies once when it reaches ``fail_at_step``.

    A marker file in the run's storage makes it happen once, so the restarted worker group
    carries on from the last checkpoint.
    """
    if fail_at_step is None or step != fail_at_step:
        return
    context = ray.train.get_context()
    if context.get_world_rank() != context.get_world_size() - 1:
        return
    marker = Path(marker_dir) / f".fault-injected-at-{fail_at_step}"
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("the worker exited here on purpose (training.fail_at_step)\n")
    os._exit(1)


# ------------------------------------------------------------------ the epoch loop


@dataclass
class LoopState:
    """Where a worker's training stands; restored from a checkpoint on resume."""

    step: int = 0
    epoch: int = 0  # epochs completed
    best_validation: float = math.inf


def run_epochs(
    *,
    training,
    steps_per_epoch: int,
    state: LoopState,
    run_dir: str,
    epoch_batches: Callable[[int], Iterable],
    train_step: Callable[[Any], dict[str, float]],
    validate: Callable[[], dict[str, float]],
    checkpoint: Callable[[int], TrainingState | None],
    tracker: "Tracker",
) -> None:
    """The worker's epochs, the same for every model: steps, checkpoints, validation, reports.

    Args:
        training: the run's ``TrainingConfig`` (epochs, checkpoint_every_steps, fail_at_step).
        steps_per_epoch: steps every worker takes per epoch (the same on all ranks, so
            that DDP's collective calls match).
        state: step counter, epochs done and best validation; updated in place.
        epoch_batches: epoch -> this worker's training batches (streamed).
        train_step: one optimisation step on a batch -> its metrics.
        validate: validation metrics (``val_*``; empty without validation data).
        checkpoint: epochs completed -> the state to save (rank 0), None on other ranks.
        tracker: MLflow (rank 0 only logs).
    """
    for epoch in range(state.epoch, training.epochs):
        epoch_end = (epoch + 1) * steps_per_epoch
        # A run resumed mid-epoch restarts the epoch's data but only takes the steps the
        # epoch has left, so the step counter ends where a clean run's does.
        sums: dict[str, float] = {}
        taken = 0
        for batch in epoch_batches(epoch):
            if state.step >= epoch_end:
                break
            maybe_fail(state.step + 1, training.fail_at_step, run_dir)
            metrics = train_step(batch)
            state.step += 1
            taken += 1
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + value
            if training.checkpoint_every_steps and state.step % training.checkpoint_every_steps == 0 and state.step < epoch_end:
                report({"step": state.step, "epoch": epoch, VALIDATION_METRIC: state.best_validation}, checkpoint(epoch))
        if state.step < epoch_end:
            rank = ray.train.get_context().get_world_rank()
            raise RuntimeError(f"worker {rank} ran out of training batches at step {state.step} of {epoch_end}")
        train_means = {key: value / max(1, taken) for key, value in sums.items()}
        validation = validate()
        if VALIDATION_METRIC in validation:
            state.best_validation = min(state.best_validation, validation[VALIDATION_METRIC])
        state.epoch = epoch + 1
        epoch_metrics = {**train_means, **validation, "step": state.step, "epoch": epoch + 1}
        tracker.metrics(epoch_metrics, state.step)
        if VALIDATION_METRIC not in epoch_metrics:
            epoch_metrics[VALIDATION_METRIC] = train_means.get("total", math.inf)
        report(epoch_metrics, checkpoint(epoch + 1))


# -------------------------------------------------------------------------- driver


def add_train_arguments(parser: argparse.ArgumentParser, kind: str) -> None:
    """The flags every ``jingle train MODEL`` takes."""
    parser.add_argument("--data", required=True, help=f"shard folder written by jingle preprocess {kind}")
    parser.add_argument("--config", required=True, help=f"JSON training config (configs/{kind}...json)")
    parser.add_argument("--workers", type=int, default=None, help="training workers (default: 1 per GPU with --gpu, else 2)")
    parser.add_argument("--gpu", action="store_true", help="one GPU per worker (nccl)")
    parser.add_argument("--storage", default="runs", help="checkpoints and MLflow store: a folder or s3:// / gs:// URI (default: ./runs)")
    parser.add_argument("--name", default=None, help=f"run name (default: {kind}-<config file name>)")
    parser.add_argument("--resume", action="store_true", help="require an earlier run of this name to continue")
    parser.add_argument("--override", action="append", default=[], metavar="SECTION.KEY=JSON", help="change one config value")


def parse_overrides(items: list[str]) -> dict:
    """``--override section.key=value`` flags -> dotted-key dict (values parsed as JSON)."""
    from pipelines.common import UsageError

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


def storage_path(storage: str) -> str:
    if "://" in storage:
        return storage
    return str(Path(storage).resolve())


def count_workers(requested: int | None, use_gpu: bool) -> int:
    from pipelines.common import UsageError

    workers = requested or (int(ray.cluster_resources().get("GPU", 0)) if use_gpu else 2) or 1
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    return workers


@dataclass(frozen=True)
class RunPlace:
    storage: str
    name: str
    run_dir: Path


def place_run(args: argparse.Namespace, *, kind: str, codec_id: str | None) -> RunPlace:
    """Where the run's checkpoints go; refuses ``--resume`` without an earlier run, and a
    continued run whose checkpoints were made with another codec or features (before any
    worker starts)."""
    from pipelines.common import UsageError

    storage = storage_path(args.storage)
    name = args.name or f"{kind}-{Path(args.config).stem}"
    run_dir = Path(storage) / name
    if args.resume and not run_dir.exists():
        raise UsageError(f"--resume: no run {name!r} under {storage}")
    earlier = sorted(run_dir.glob("checkpoint_*/state.pt"), key=lambda path: path.stat().st_mtime) if run_dir.exists() else []
    if earlier:
        load_state(earlier[-1], kind=kind, codec_id=codec_id)
    return RunPlace(storage, name, run_dir)


@dataclass
class TrainSummary:
    run_dir: str
    best_checkpoint: str | None
    latest_checkpoint: str | None
    step: int
    epoch: int
    metrics: dict
    tracking_uri: str
    run_id: str
    shown_metrics: tuple[str, ...] = ("total", VALIDATION_METRIC)

    def report(self) -> str:
        metrics = ", ".join(f"{key} {self.metrics[key]:.4f}" for key in self.shown_metrics if key in self.metrics)
        ui = f"mlflow ui --backend-store-uri {self.tracking_uri}"
        return "\n".join(
            [
                f"trained to step {self.step} (epoch {self.epoch}): {metrics}",
                f"  best checkpoint    {self.best_checkpoint}",
                f"  latest checkpoint  {self.latest_checkpoint}",
                f"  run folder         {self.run_dir}",
                f"  MLflow run         {self.run_id} in {self.tracking_uri}",
                f"  open the MLflow UI: {ui}",
            ]
        )


def summarize(result, *, kind: str, place: RunPlace, has_validation: bool, run_id: str, shown_metrics: tuple[str, ...] = ("total", VALIDATION_METRIC)) -> TrainSummary:
    """A finished ``trainer.fit()`` -> the summary printed to the user."""
    if result.error is not None:
        raise RuntimeError(f"training failed: {result.error}")
    best = result.get_best_checkpoint(VALIDATION_METRIC, "min") if has_validation else result.checkpoint
    latest = result.checkpoint
    final = load_state(latest.path, kind=kind) if latest else None
    return TrainSummary(
        run_dir=str(place.run_dir),
        best_checkpoint=best.path if best else None,
        latest_checkpoint=latest.path if latest else None,
        step=final.step if final else 0,
        epoch=final.epoch if final else 0,
        metrics=result.metrics or {},
        tracking_uri=tracking_uri(place.storage),
        run_id=run_id,
        shown_metrics=shown_metrics,
    )


# -------------------------------------------------------------------------- launch


# Logical CPUs left to Ray Data's read tasks: workers that took every CPU would starve the
# reads that feed them, and a small cluster would hang (seen on 2 CPUs with 2 workers).
DATA_CPUS = 1.0
# What one read or filter task asks for: they mostly wait on storage.
DATA_TASK_CPUS = 0.25


def worker_resources(workers: int, use_gpu: bool) -> dict[str, float]:
    """Resources of one training worker: a CPU each where there is room, else a share."""
    if use_gpu:
        return {"CPU": 1, "GPU": 1}
    cpus = float(ray.cluster_resources().get("CPU", 1))
    return {"CPU": round(max(0.1, min(1.0, (cpus - DATA_CPUS) / workers)), 2)}


def worker_torch_threads(local_world_size: int) -> int:
    """Torch threads of a CPU training worker: the node's cores shared among its workers.

    Ray sets a worker's OMP_NUM_THREADS to its whole logical CPUs (one here, since workers
    leave room for Ray Data's reads), which would leave a lone worker on one core.
    """
    return max(1, (os.cpu_count() or 1) // max(1, local_world_size))


def run_trainer(
    train_loop: Callable[[dict], None],
    *,
    loop_config: dict,
    datasets: dict[str, ray.data.Dataset],
    workers: int,
    use_gpu: bool,
    storage: str,
    name: str,
    num_to_keep: int,
    max_failures: int,
):
    """Launch a TorchTrainer (DDP: gloo on CPU, nccl on GPU) and wait for it."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        train_loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker=worker_resources(workers, use_gpu)),
        run_config=RunConfig(
            name=name,
            storage_path=storage,
            checkpoint_config=CheckpointConfig(
                num_to_keep=num_to_keep, checkpoint_score_attribute=VALIDATION_METRIC, checkpoint_score_order="min"
            ),
            failure_config=FailureConfig(max_failures=max_failures),
        ),
        datasets=datasets,
        # Only the training data is split: an equal split of a small validation set can
        # leave a worker nothing, so every worker reads all of it (same metric on every rank).
        dataset_config=DataConfig(datasets_to_split=["train"]),
    )
    return trainer.fit()
