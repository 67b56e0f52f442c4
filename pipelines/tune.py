"""``jingle tune MODEL``: search a training config with Ray Tune, stopping poor trials with ASHA.

    python -m pipelines.tune_fusion  --data SHARDS --space tune_spaces/fusion_loss_weights.yaml [--samples 8] ...
    python -m pipelines.tune_pointer --data SHARDS --space tune_spaces/pointer.yaml ...

A search space (``pipelines/tune_space.py``) is an overlay on the base training config
(``--config``) by its own dotted keys. Every trial runs the task and loop of ``jingle
train`` (``pipelines/worker.py: train_worker`` in the Tune-trial context of
``pipelines/ray_contexts.py``), in the trial's own process with one CPU: no Ray Train
controller and no Ray Data read per epoch, and trials never wait on each other's CPUs
(``max_concurrent_trials`` is the cluster's CPUs). Trials are ranked by the task's
selection metric: the fusion model's fixed arrangement score ``val_score`` (never the
trial's own loss, whose weights the search changes), the pointer network's
``val_accuracy_within_2``; ``epoch`` is ASHA's time attribute.

Search: random (Optuna's seeded ``RandomSampler``) or ``--search optuna`` (TPE), both
through Ray's ``OptunaSearch`` with the space written define-by-run, so conditional
parameters (a masking strategy's own settings) are drawn only when they apply. ASHA stops
trials (``--grace-period``, ``--reduction-factor``, ``--max-epochs`` as its ``max_t``);
``--early-stopping none`` runs every trial to the end (the baseline of bench/tune.py).

MLflow: one parent run for the search and one child run per trial (tag
``mlflow.parentRunId``), all written by the Tune driver (a callback), so one process writes
the SQLite store whatever the number of concurrent trials.

Under ``STORAGE/NAME/``: Tune's own files and the trials' checkpoints, ``best_config.json``
(a complete config for ``jingle train --config``), ``trials.csv`` and ``trials.png``.
``--resume`` continues an interrupted search with ``Tuner.restore``: finished trials are
not rerun, unfinished ones continue from their checkpoints.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from jingle.core.storage import Location, check_writable, checkpoint_uri, ray_storage, staged
from jingle.pipelines.common import PROJECT_ROOT, EntryPoint, UsageError, add_common_arguments, init_ray
from jingle.pipelines.loop import Selection
from jingle.pipelines.registry import get_model, load_task, task_reference
from jingle.pipelines.run_spec import EARLY_STOPPING, SEARCHES, TuneSpec, worker_plan
from jingle.pipelines.shard_data import ShardData
from jingle.pipelines.tasks import Task, get_task
from jingle.pipelines.tune_callbacks import tracking_callback, trainer_cleanup
from jingle.pipelines.tune_trials import DIVERGED, best_checkpoint_path, trial_rows, trials_figure, write_trials_csv
from jingle.pipelines.worker import WorkerPlan

# CPUs a multi-worker trial holds itself (it only waits on its trainer): Tune refuses 0.
TRIAL_CPUS = 0.01


def add_tune_arguments(parser: argparse.ArgumentParser, task: Task) -> None:
    kind = task.name
    parser.add_argument("--data", required=True, help=f"shard folder written by jingle preprocess {kind}")
    parser.add_argument("--validation", default=None, metavar="SHARDS",
                        help="held-out shard folder that ranks the trials (default: a split of --data by pair id)")
    parser.add_argument("--space", required=True, help="search space: a YAML overlay on the config (tune_spaces/)")
    default_config = get_model(kind).default_config
    parser.add_argument("--config", default=str(PROJECT_ROOT / default_config),
                        help=f"base training config (default: the project's {default_config})")
    parser.add_argument("--samples", type=int, default=8, help="trials to sample (default: 8)")
    parser.add_argument("--max-epochs", type=int, default=10, help="epochs of a trial that is never stopped: ASHA's max_t (default: 10)")
    parser.add_argument("--search", choices=SEARCHES, default="random", help="random (seeded) or optuna (TPE) (default: random)")
    parser.add_argument("--early-stopping", choices=EARLY_STOPPING, default="asha",
                        help="asha, or none: every trial runs --max-epochs (the baseline of bench/tune.py) (default: asha)")
    parser.add_argument("--grace-period", type=int, default=1, help="epochs every trial runs before ASHA may stop it (default: 1)")
    parser.add_argument("--reduction-factor", type=float, default=4.0,
                        help="ASHA keeps 1/R of the trials at each rung (default: 4, Ray's own; bench/tune.py measured 3 and 4)")
    parser.add_argument("--workers-per-trial", type=int, default=1, help="training workers per trial (default: 1, in the trial's process)")
    parser.add_argument("--storage", default="runs", help="trials, checkpoints and the MLflow store (default: ./runs)")
    parser.add_argument("--name", default=None, help=f"search name (default: tune-{kind}-<space file name>)")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted search of this name")
    parser.add_argument("--seed", type=int, default=0, help="seed of the search's sampler (default: 0)")
    task.add_arguments(parser)
    add_common_arguments(parser)


# ------------------------------------------------------------------ the trial


@dataclass(frozen=True)
class TrialSetup:
    """What every trial needs, sent once to the trials (``tune.with_parameters``)."""

    task: str
    base_config: dict
    data: ShardData
    validation: ShardData | None  # a --validation folder, or None: the split of ``data``
    train_ids: list[str]
    validation_ids: list[str]
    max_epochs: int
    node_cpus: int  # CPUs of the largest node: its trials (W = 1) or its trainers' workers (W > 1) share its cores
    task_options: dict = field(default_factory=dict)  # the task's own settings (e.g. codec_checkpoint)
    workers_per_trial: int = 1
    search_dir: str = ""  # where a multi-worker trial's trainer keeps its checkpoints (``trainers/TRIAL_ID``)
    task_reference: str = ""  # "module:Class" the trial processes import the task by (empty: by name)

    def load_task(self) -> Task:
        return load_task(self.task_reference) if self.task_reference else get_task(self.task)


def trial_resources(workers_per_trial: int) -> dict[str, float]:
    """What one trial holds: a CPU for a trial that trains in its own process; a sliver
    for one that launches a trainer, whose workers take ``worker_cpus`` each."""
    return {"cpu": 1} if workers_per_trial == 1 else {"cpu": TRIAL_CPUS}


def worker_cpus(workers_per_trial: int) -> float:
    """A multi-worker trial's worker share: the trial's own sliver and its workers fill
    ``workers_per_trial`` CPUs, so ``CPUs // workers_per_trial`` trials run side by side
    and no trainer waits on another trial's CPUs (a nested trainer that cannot get its
    CPUs retries forever in Ray 2.60)."""
    return math.floor((workers_per_trial - TRIAL_CPUS) / workers_per_trial * 100) / 100


def trial_config(setup: TrialSetup, params: dict[str, Any]):
    """The complete training config of a trial: the base with the sampled overlay, run for
    the search's ``--max-epochs`` (ASHA may stop it before)."""
    task = setup.load_task()
    base = task.config_class.from_dict(setup.base_config)
    return base.with_overrides({**params, "training.epochs": setup.max_epochs})


def trial_plan(setup: TrialSetup, params: dict[str, Any], run_dir: str | Location) -> WorkerPlan:
    """The workers' plan of one trial: ``jingle train``'s (``run_spec.worker_plan``) for the
    trial's config, without an MLflow run of its own (the driver logs every trial)."""
    task = setup.load_task()
    config = trial_config(setup, params)
    task_plan = task.plan(config, setup.data, train_ids=setup.train_ids, workers=setup.workers_per_trial, options=setup.task_options)
    return worker_plan(task, config, setup.data, train_ids=setup.train_ids, validation_ids=setup.validation_ids,
                       validation=setup.validation, task_plan=task_plan, run_dir=run_dir, tracking=None)


def run_trial(params: dict[str, Any], setup: TrialSetup) -> None:
    """One trial (a Tune function trainable): plan the task for its config and run the
    training loop, reporting every epoch to Tune: in this process, or with
    ``--workers-per-trial W > 1`` in a ``TorchTrainer`` of W workers whose rank 0 reports
    reach Tune through ``TuneReportCallback``."""
    import ray.tune

    task = setup.load_task()
    workers = setup.workers_per_trial
    trial_id = ray.tune.get_context().get_trial_id()
    trainers = Location.of(setup.search_dir) / "trainers"
    run_dir = ray.tune.get_context().get_trial_dir() if workers == 1 else str(trainers / trial_id)
    plan = trial_plan(setup, params, run_dir)
    training = trial_config(setup, params).training
    if workers == 1:
        from jingle.pipelines.ray_contexts import tune_trial

        tune_trial(plan, trials_per_node=setup.node_cpus, diverged=DIVERGED)
        return
    from ray.tune.integration.ray_train import TuneReportCallback

    from jingle.pipelines.train import RunPlace, run_trainer

    # Named by the trial id: a resumed search reruns an unfinished trial with the same id,
    # and its trainer continues from its own latest checkpoint.
    place = RunPlace(storage=trainers, name=trial_id, run_dir=trainers / trial_id)
    result = run_trainer(plan, workers=workers, use_gpu=False, place=place, num_to_keep=training.num_to_keep,
                         max_failures=training.max_failures,
                         resources_per_worker={"CPU": worker_cpus(workers)}, callbacks=(TuneReportCallback(),),
                         context_options={"node_workers": setup.node_cpus, "selection": task.selection, "diverged": DIVERGED,
                                          "report_placement_group": True})
    if result.error is not None:
        raise RuntimeError(f"trial {trial_id}: training failed: {result.error}")


# ------------------------------------------------------------------ MLflow from the driver


def open_search_run(storage: Location, *, task: str, name: str, params: dict[str, Any]) -> tuple[str, str, str]:
    """(tracking uri, experiment id, parent run id) of this search (reopened on resume)."""
    from mlflow.tracking import MlflowClient

    from jingle.pipelines.tracking import open_tracking_run

    parent = open_tracking_run(storage=storage, experiment=f"jingle-tune-{task}", run_name=name, params=params)
    client = MlflowClient(parent.uri)
    experiment_id = client.get_run(parent.run_id).info.experiment_id
    return parent.uri, experiment_id, parent.run_id


# ------------------------------------------------------------------ the search


@dataclass
class TuneSummary:
    search_dir: str
    metric: str
    mode: str
    trials: int
    stopped_early: int
    errored: int
    trial_epochs: int
    best_value: float | None
    best_params: dict[str, Any]
    best_config: str | None
    best_checkpoint: str | None
    trials_csv: str
    trials_png: str
    tracking_uri: str
    parent_run_id: str
    seconds: float = 0.0

    def report(self) -> str:
        best = "n/a" if self.best_value is None else f"{self.best_value:.4f}"
        lines = [
            f"searched {self.trials} trial(s) in {self.seconds:.0f} s: {self.trial_epochs} trial-epochs, "
            f"{self.stopped_early} stopped early by ASHA, {self.errored} failed",
            f"  best {self.metric} ({self.mode})  {best} with {json.dumps(self.best_params)}",
            f"  best config        {self.best_config}",
            f"  best checkpoint    {self.best_checkpoint}",
            f"  trials             {self.trials_csv}, {self.trials_png}",
            f"  search folder      {self.search_dir}",
            f"  MLflow parent run  {self.parent_run_id} in {self.tracking_uri}",
            f"  open the MLflow UI: mlflow ui --backend-store-uri {self.tracking_uri}",
        ]
        return "\n".join(lines)


def run(spec: TuneSpec) -> TuneSummary:
    """A whole search, as ``jingle tune TASK`` does it."""
    import time

    from jingle.pipelines.tune_space import SearchSpace

    started = time.perf_counter()
    task = get_task(spec.task)
    base = task.config_class.from_file(spec.config)
    space = SearchSpace.from_file(spec.space, task.config_class, base)
    unranked = task.unranked(base)
    if unranked:
        raise UsageError(f"--config {spec.config}: {unranked}")
    if "training.epochs" in space.keys:
        raise UsageError(f"--space {spec.space} searches training.epochs: a trial's epochs are --max-epochs (ASHA stops it earlier)")
    data = ShardData.open(spec.data, kind=task.shard_kind or task.name)
    validation = ShardData.open(spec.validation, kind=task.shard_kind or task.name, flag="--validation") if spec.validation else None
    train_ids, validation_ids = data.split(base.training.validation_fraction, base.training.seed, validation=validation)
    if not validation_ids:
        raise UsageError(f"--data {data.root}: no held-out pairs to rank trials by (training.validation_fraction {base.training.validation_fraction})")
    size = data.size_bytes + (validation.size_bytes if validation is not None else 0)
    if size > base.training.max_in_memory_mb * 2**20:
        raise UsageError(f"--data {data.root}: {size / 2**20:.0f} MB of shards is above training.max_in_memory_mb "
                         f"({base.training.max_in_memory_mb}); every trial keeps its rows in memory: raise it or search on a subset")
    storage, name = spec.storage, spec.run_name
    check_writable(storage, "--storage")
    search_dir = storage / name
    # the task checks the base config against the data before anything starts (codec, sizes)
    task.plan(base, data, train_ids=train_ids, workers=1, options=spec.task_options)

    init_ray(spec.num_cpus, debug=spec.debug)
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 1))
    if cpus < spec.workers_per_trial:
        raise UsageError(f"--workers-per-trial {spec.workers_per_trial} needs as many CPUs; the cluster has {cpus}")
    node_cpus = max(1, max(int(node["Resources"].get("CPU", 1)) for node in ray.nodes() if node["Alive"]))
    setup = TrialSetup(task=task.name, base_config=base.to_dict(), data=data, validation=validation, train_ids=train_ids,
                       validation_ids=validation_ids,
                       max_epochs=spec.max_epochs, node_cpus=node_cpus, task_options=dict(spec.task_options),
                       workers_per_trial=spec.workers_per_trial, search_dir=str(search_dir),
                       task_reference=task_reference(task))
    uri, experiment_id, parent_run_id = open_search_run(
        storage, task=task.name, name=name,
        params={"space": str(spec.space), "base_config": base.to_dict(), "samples": spec.samples, "max_epochs": spec.max_epochs,
                "search": spec.search, "grace_period": spec.grace_period, "reduction_factor": spec.reduction_factor, "seed": spec.seed},
    )
    tuner = build_tuner(task, space, setup, spec, storage=storage, name=name, max_concurrent=cpus // spec.workers_per_trial,
                        callbacks=[tracking_callback(uri, experiment_id, parent_run_id), trainer_cleanup()])
    if not spec.debug:
        # Ray Tune's own output (an experiment box, a TensorBoard hint pointing into Ray's
        # temp folder) prints even at verbose=0; its legacy reporter prints nothing there
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    results = tuner.fit()
    with staged(search_dir) as folder:  # a bucket's outputs are written here, then uploaded
        summary = summarize(results, task=task, space=space, setup=setup, folder=folder, title=name,
                            name_checkpoint=partial(checkpoint_uri, storage=search_dir))
        summary.tracking_uri, summary.parent_run_id = uri, parent_run_id
        summary.seconds = time.perf_counter() - started
        close_search_run(summary)  # logs the local files as the parent run's artifacts
    if not search_dir.is_local:  # name the uploaded copies
        for field_name in ("trials_csv", "trials_png", "best_config"):
            if getattr(summary, field_name):
                setattr(summary, field_name, str(search_dir / Path(getattr(summary, field_name)).name))
        summary.search_dir = str(search_dir)
        if summary.best_checkpoint:
            summary.best_checkpoint = checkpoint_uri(summary.best_checkpoint, search_dir)
    return summary


def close_search_run(summary: TuneSummary) -> None:
    """The parent run gets the search's outcome, its files, and ends."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(summary.tracking_uri)
    metrics = {"trials": summary.trials, "trial_epochs": summary.trial_epochs, "stopped_early": summary.stopped_early,
               "errored": summary.errored, "search_seconds": summary.seconds}
    if summary.best_value is not None:
        metrics[f"best_{summary.metric}"] = summary.best_value
    for key, value in metrics.items():
        client.log_metric(summary.parent_run_id, key, float(value))
    for path in (summary.best_config, summary.trials_csv, summary.trials_png):
        if path and Path(path).exists():
            client.log_artifact(summary.parent_run_id, path)
    client.set_terminated(summary.parent_run_id, "FINISHED")


def build_tuner(task: Task, space, setup: TrialSetup, spec: TuneSpec, *, storage: Location, name: str, max_concurrent: int, callbacks):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from jingle.pipelines.tune_space import make_searcher

    selection: Selection = task.selection
    keep = task.config_class.from_dict(setup.base_config).training.num_to_keep  # as jingle train keeps them
    trainable = tune.with_resources(tune.with_parameters(run_trial, setup=setup), trial_resources(setup.workers_per_trial))
    search_dir = storage / name
    filesystem = None if storage.is_local else storage.fs
    if spec.resume:
        if not tune.Tuner.can_restore(search_dir.uri if storage.is_local else search_dir.path, storage_filesystem=filesystem):
            raise UsageError(f"--resume: no search {name!r} under {storage} to continue")
        return tune.Tuner.restore(search_dir.uri if storage.is_local else search_dir.path, trainable, resume_unfinished=True,
                                  resume_errored=False, restart_errored=False, storage_filesystem=filesystem)
    if search_dir.list():
        raise UsageError(f"a search named {name!r} already exists under {storage}: --resume it or choose another --name")
    searcher = make_searcher(space, search=spec.search, seed=spec.seed, metric=selection.metric, mode=selection.mode,
                             debug=spec.debug)
    scheduler = (
        ASHAScheduler(time_attr="epoch", max_t=spec.max_epochs, grace_period=spec.grace_period, reduction_factor=spec.reduction_factor)
        if spec.early_stopping == "asha" else FIFOScheduler()
    )
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=selection.metric, mode=selection.mode, search_alg=searcher, scheduler=scheduler,
            num_samples=spec.samples, max_concurrent_trials=max_concurrent,
        ),
        run_config=tune.RunConfig(
            name=name, **ray_storage(storage), callbacks=callbacks, verbose=0,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=keep, checkpoint_score_attribute=selection.metric,
                                                    checkpoint_score_order=selection.mode),
        ),
    )


# ------------------------------------------------------------------ the outputs


def summarize(results, *, task: Task, space, setup: TrialSetup, folder: Path, title: str,
              name_checkpoint=lambda path: path) -> TuneSummary:
    """Write the search's outputs into a local folder and sum the search up;
    ``name_checkpoint`` turns a path Ray gives into the one users see (trials.csv)."""
    search_dir = folder
    selection = task.selection
    rows = trial_rows(results, selection.metric, selection.mode, setup.max_epochs)
    for row in rows:
        row.checkpoint = name_checkpoint(row.checkpoint) if row.checkpoint else None
    search_dir.mkdir(parents=True, exist_ok=True)
    trials_csv, trials_png = search_dir / "trials.csv", search_dir / "trials.png"
    write_trials_csv(trials_csv, rows, list(space.keys), selection.metric)
    trials_figure(trials_png, rows, metric=selection.metric, max_epochs=setup.max_epochs, title=f"{title}: {selection.metric} per epoch")
    scored = [row for row in rows if row.best is not None]
    best_row = (max if selection.mode == "max" else min)(scored, key=lambda row: row.best) if scored else None
    best_config_path = best_checkpoint = None
    if best_row is not None:
        best_config = trial_config(setup, best_row.params)
        best_config_path = search_dir / "best_config.json"
        best_config_path.write_text(json.dumps(best_config.to_dict(), indent=2) + "\n")
        best_result = next(result for result in results if dict(result.config or {}) == best_row.params)
        best_checkpoint = best_checkpoint_path(best_result, selection)
    return TuneSummary(
        search_dir=str(search_dir),
        metric=selection.metric,
        mode=selection.mode,
        trials=len(rows),
        stopped_early=sum(row.stopped_early for row in rows),
        errored=sum(row.status == "ERROR" for row in rows),
        trial_epochs=sum(row.last_epoch for row in rows),
        best_value=best_row.best if best_row else None,
        best_params=best_row.params if best_row else {},
        best_config=str(best_config_path) if best_config_path else None,
        best_checkpoint=best_checkpoint,
        trials_csv=str(trials_csv),
        trials_png=str(trials_png),
        tracking_uri="",
        parent_run_id="",
    )


def entry_point(task_name: str, doc: str) -> EntryPoint:
    """The ``jingle tune TASK`` command (and ``python -m pipelines.tune_TASK``)."""
    from jingle.pipelines.common import reporting

    return EntryPoint(f"jingle tune {task_name}", doc, partial(add_tune_arguments, task=get_task(task_name)),
                      reporting(lambda args: run(TuneSpec.from_args(task_name, args))))
