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

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

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
    codec: dict
    segmenting: dict
    rows_by_pair: dict[str, int]

    @classmethod
    def open(cls, root: str | os.PathLike) -> "ShardData":
        root = str(Path(root).resolve())
        if not Path(root).is_dir():
            raise InputError(f"--data {root} does not exist")
        manifest = read_manifest(root)
        rows: dict[str, int] = {}
        for entry in manifest["files"].values():
            for pair_id, indices in entry["items"].items():
                rows[pair_id] = rows.get(pair_id, 0) + len(indices)
        if not rows:
            raise InputError(f"--data {root} holds no segments: run jingle preprocess first")
        return cls(root, manifest["settings"]["codec"], manifest["settings"]["segmenting"], rows)

    def datasets(self, train_ids: list[str], validation_ids: list[str], columns: list[str]) -> dict[str, ray.data.Dataset]:
        """Streaming datasets of the two sides (never materialised on the driver)."""
        dataset = ray.data.read_parquet(
            shard_paths(self.root), columns=columns + ["pair_id"], ray_remote_args={"num_cpus": DATA_TASK_CPUS}
        )
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
