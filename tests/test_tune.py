"""``jingle tune`` on the session's Ray: a small search of the tiny fusion model with ASHA,
its outputs, its MLflow runs, an interrupted search resumed, bad input, the pointer search."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from jingle.datasets.edits import make_conform_pair, write_pointer_corpus
from jingle.datasets.features import MelFeatures
from jingle.datasets.synth import CorpusSpec, write_fusion_corpus
from jingle.pipelines import preprocess_fusion, preprocess_pointer, train_fusion, tune_fusion, tune_pointer
from jingle.training.pointer_config import PointerTrainConfig
from tests.test_fusion_training import TINY_MODEL

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parent.parent
CONFIG = {
    "model": TINY_MODEL,
    "validation": {"score_segments": 2, "score_shortcuts": False},  # the shortcuts' scores: tests/test_loop.py
    "training": {"batch_size": 2, "learning_rate": 0.003, "warmup_steps": 0, "schedule": "constant", "validation_fraction": 0.25},
}
SPACE = """\
parameters:
  losses.corr_weight: {loguniform: [0.01, 1.0]}
  training.learning_rate: {loguniform: [1.0e-4, 1.0e-2]}
  masking.strategy: {choice: [none, temporal]}
  masking.temporal_segment: {randint: [15, 40], when: {masking.strategy: temporal}}
"""


@pytest.fixture(scope="module")
def fusion_data(ray_session, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tune-data")
    write_fusion_corpus(root / "pairs", CorpusSpec(pairs=6, min_seconds=3.2, max_seconds=4.5, seed=5))
    preprocess_fusion.run(preprocess_fusion.spec(pairs=str(root / "pairs"), out=root / "shards", segment_seconds=1, quiet=True))
    (root / "config.json").write_text(json.dumps(CONFIG))
    (root / "space.yaml").write_text(SPACE)
    return root


def tune_spec(root: Path, storage: Path, **spec):
    """The spec of a search on the fixture's shards, space and config."""
    return tune_fusion.spec(data=str(root / "shards"), space=str(root / "space.yaml"), config=str(root / "config.json"),
                            storage=storage, name="search", **spec)


def tune_args(root: Path, storage: Path, *extra: str) -> list[str]:
    return ["--data", str(root / "shards"), "--space", str(root / "space.yaml"), "--config", str(root / "config.json"),
            "--storage", str(storage), "--name", "search", *extra]


@pytest.fixture(scope="module")
def search(fusion_data, tmp_path_factory):
    storage = tmp_path_factory.mktemp("tune-runs")
    return storage, tune_fusion.run(tune_spec(fusion_data, storage, samples=6, max_epochs=4, grace_period=1, reduction_factor=2))


def test_a_small_search_runs_to_the_end_with_trials_stopped_early(search):
    storage, summary = search
    assert summary.trials == 6 and summary.errored == 0
    assert summary.stopped_early >= 1 and summary.trial_epochs < 6 * 4  # ASHA cut some trials short
    folder = storage / "search"
    rows = list(csv.DictReader((folder / "trials.csv").open()))
    assert len(rows) == 6
    assert {"losses.corr_weight", "training.learning_rate", "masking.strategy", "masking.temporal_segment", "last_epoch",
            "best_val_score", "stopped_early", "status"} <= set(rows[0])
    for row in rows:
        # the masking strategy's own parameter is drawn only when that strategy is
        assert (row["masking.temporal_segment"] != "") == (row["masking.strategy"] == "temporal")
        assert (row["stopped_early"] == "True") == (int(row["last_epoch"]) < 4)
    best = max(float(row["best_val_score"]) for row in rows)
    assert summary.metric == "val_score" and summary.best_value == pytest.approx(best)
    assert (folder / "trials.png").read_bytes()[:4] == b"\x89PNG"
    assert Path(summary.best_checkpoint, "state.pt").exists()


def test_best_config_is_complete_and_trains_with_jingle_train(search, fusion_data, tmp_path):
    storage, summary = search
    best = json.loads(Path(summary.best_config).read_text())
    for key, value in summary.best_params.items():
        section, _, name = key.partition(".")
        assert best[section][name] == value
    # the base config's own values are kept where the space did not search
    assert best["training"]["epochs"] == 4 and best["training"]["batch_size"] == CONFIG["training"]["batch_size"]
    assert best["model"]["model_dim"] == TINY_MODEL["model_dim"] and best["validation"]["score_segments"] == CONFIG["validation"]["score_segments"]
    trained = train_fusion.run(train_fusion.spec(data=str(fusion_data / "shards"), config=summary.best_config, storage=tmp_path,
                                                 workers=1, overrides={"training.epochs": 1}))
    assert trained.epoch == 1 and trained.best_checkpoint


def test_every_trial_is_a_child_run_of_the_search_in_one_store(search):
    """Two trials ran at once on 2 CPUs; the driver wrote every run: none failed to log."""
    _, summary = search
    client = MlflowClient(summary.tracking_uri)
    parent = client.get_run(summary.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials"] == 6
    children = client.search_runs([parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{summary.parent_run_id}'")
    assert len(children) == 6 and all(child.info.status == "FINISHED" for child in children)
    for child in children:
        history = client.get_metric_history(child.info.run_id, "val_score")
        assert len(history) == int(child.data.metrics["epoch"]) >= 1
        assert "training.learning_rate" in child.data.params


@pytest.mark.parametrize(
    "space, message",
    [
        ("parameters:\n  losses.corr_wieght: {uniform: [0, 1]}\n", "losses.corr_wieght"),
        ("parameters:\n  losses.corr_weight: {gaussian: [0, 1]}\n", "gaussian"),
        ("parameters:\n  losses.corr_weight: {uniform: [1, 0]}\n", "losses.corr_weight"),
    ],
)
def test_a_bad_space_is_refused_with_one_line(fusion_data, tmp_path, capsys, space, message):
    (tmp_path / "bad.yaml").write_text(space)
    argv = tune_args(fusion_data, tmp_path) + ["--space", str(tmp_path / "bad.yaml")]
    assert tune_fusion.main(argv) == 2
    errors = capsys.readouterr().err
    assert message in errors and len(errors.strip().splitlines()) == 1, errors
    assert not (tmp_path / "search").exists()  # nothing started


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--samples", "0"], "--samples must be at least 1"),
        (["--max-epochs", "1", "--grace-period", "2"], "below --grace-period"),
        (["--resume"], "no search 'search'"),
    ],
)
def test_bad_flags_are_refused_with_one_line(fusion_data, tmp_path, capsys, extra, message):
    assert tune_fusion.main(tune_args(fusion_data, tmp_path, *extra)) == 2
    errors = capsys.readouterr().err
    assert message in errors and len(errors.strip().splitlines()) == 1, errors


def test_a_base_config_without_the_score_is_refused_with_one_line(fusion_data, tmp_path, capsys):
    """validation.score_segments 0 trains (the demo's config), but leaves no val_score to rank trials by."""
    config = json.loads((fusion_data / "config.json").read_text())
    config["validation"]["score_segments"] = 0
    (tmp_path / "unscored.json").write_text(json.dumps(config))
    assert tune_fusion.main(tune_args(fusion_data, tmp_path) + ["--config", str(tmp_path / "unscored.json")]) == 2
    errors = capsys.readouterr().err
    assert "validation.score_segments is 0" in errors and len(errors.strip().splitlines()) == 1, errors
    assert not (tmp_path / "search").exists()


def test_an_interrupted_search_resumes_without_rerunning_finished_trials(fusion_data, ray_address, tmp_path):
    argv = [sys.executable, "-m", "pipelines.tune_fusion", *tune_args(fusion_data, tmp_path, "--samples", "4", "--max-epochs", "3",
                                                                     "--grace-period", "3")]
    process = subprocess.Popen(argv, cwd=REPO, env={**os.environ, "RAY_ADDRESS": ray_address}, start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    folder = tmp_path / "search"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(finished_trials(folder)) < 2:
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGINT)  # as a user's Ctrl-C
    process.wait(timeout=120)
    printed = process.stdout.read()
    first = finished_trials(folder)
    assert len(first) >= 2, printed[-2000:]
    # a quiet terminal without --debug: no Optuna study line, no Ray Tune box or TensorBoard hint
    for noise in ("A new study created", "Configuration for experiment", "tensorboard", "View detailed results"):
        assert noise not in printed, printed[-2000:]
    lengths = {trial: len(path.read_text().splitlines()) for trial, path in first.items()}

    resumed = tune_fusion.run(tune_spec(fusion_data, tmp_path, resume=True, max_epochs=3, grace_period=3))
    assert resumed.trials == 4 and resumed.errored == 0
    for trial, path in first.items():  # finished trials were not run again
        assert len(path.read_text().splitlines()) == lengths[trial] == 3


def finished_trials(folder: Path) -> dict[str, Path]:
    """Trial folder name -> its result.json, for trials that reported their last epoch (3)."""
    done = {}
    for path in folder.glob("run_trial_*/result.json"):
        lines = path.read_text().splitlines()
        if lines and json.loads(lines[-1]).get("epoch") == 3:
            done[path.parent.name] = path
    return done


def test_multi_worker_trials_train_in_their_own_trainers(fusion_data, tmp_path):
    """--workers-per-trial 2 on 2 CPUs: each trial launches a TorchTrainer of two workers
    whose reports reach Tune; ASHA ends each trial (at max_t at the latest) and the next one
    still gets the CPUs: none waits forever on the one before."""
    summary = tune_fusion.run(tune_spec(fusion_data, tmp_path, samples=2, max_epochs=2, grace_period=1, reduction_factor=2,
                                        workers_per_trial=2))
    assert summary.trials == 2 and summary.errored == 0
    rows = list(csv.DictReader((tmp_path / "search" / "trials.csv").open()))
    trainers = tmp_path / "search" / "trainers"
    for row in rows:
        ranks = [json.loads(path.read_text()) for path in sorted((trainers / row["trial_id"] / "workers").glob("rank-*.json"))]
        assert [rank["rank"] for rank in ranks] == [0, 1] and ranks[0]["pid"] != ranks[1]["pid"]
        assert int(row["last_epoch"]) >= 1 and row["best_val_score"] != ""
    assert Path(summary.best_checkpoint, "state.pt").exists()
    assert Path(summary.best_checkpoint).is_relative_to(trainers)


def test_more_workers_per_trial_than_cpus_is_refused(fusion_data, tmp_path, capsys):
    assert tune_fusion.main(tune_args(fusion_data, tmp_path, "--workers-per-trial", "3")) == 2
    errors = capsys.readouterr().err
    assert "--workers-per-trial 3 needs as many CPUs; the cluster has 2" in errors and len(errors.strip().splitlines()) == 1


def test_the_pointer_search_runs(ray_session, tmp_path):
    features = MelFeatures()
    pairs = [make_conform_pair(seed, seconds=8.0, features=features, processed=seed % 2 == 1) for seed in range(5)]
    write_pointer_corpus(tmp_path / "pairs", pairs, features)
    config = PointerTrainConfig.from_file(REPO / "configs/pointer/mini.json").with_overrides({
        "model.model_dim": 32, "model.heads": 2, "model.encoder_layers": 1, "model.decoder_layers": 1, "model.feedforward_dim": 64,
        "data.max_edit_frames": 120, "data.max_raw_frames": 300, "data.repeats_per_epoch": 1, "training.batch_size": 2,
        "training.warmup_steps": 2, "training.validation_fraction": 0.2,
    })
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    preprocess_pointer.run(preprocess_pointer.spec(pairs=str(tmp_path / "pairs"), out=tmp_path / "shards",
                                                   config=str(tmp_path / "config.json"), quiet=True))
    (tmp_path / "space.yaml").write_text("parameters:\n  training.learning_rate: {loguniform: [1.0e-4, 3.0e-3]}\n")
    summary = tune_pointer.run(tune_pointer.spec(
        data=str(tmp_path / "shards"), space=str(tmp_path / "space.yaml"), config=str(tmp_path / "config.json"),
        storage=tmp_path / "runs", samples=2, max_epochs=2, grace_period=2,
    ))
    assert summary.trials == 2 and summary.errored == 0 and summary.metric == "val_accuracy_within_2" and summary.mode == "max"
    assert summary.best_value is not None and Path(summary.best_config).exists()


def test_a_trial_runs_what_jingle_train_would_run_with_its_config(fusion_data, tmp_path):
    """One builder plans a training run and a trial: a trial keeps the base config's
    checkpoints every N steps and fault injection (trials once dropped both), runs the
    search's --max-epochs, and its plan is the one ``jingle train`` makes of the trial's config."""
    from jingle.pipelines.run_spec import worker_plan
    from jingle.pipelines.shard_data import ShardData
    from jingle.pipelines.tasks import get_task
    from jingle.pipelines.tune import TrialSetup, trial_config, trial_plan

    task = get_task("fusion")
    base = task.config_class.from_dict(CONFIG).with_overrides(
        {"training.checkpoint_every_steps": 3, "training.fail_at_step": 5, "training.num_to_keep": 4})
    data = ShardData.open(str(fusion_data / "shards"), kind="fusion")
    train_ids, validation_ids = data.split(base.training.validation_fraction, base.training.seed)
    setup = TrialSetup(task="fusion", base_config=base.to_dict(), data=data, validation=None, train_ids=train_ids,
                       validation_ids=validation_ids, max_epochs=7, node_cpus=1)
    params = {"losses.corr_weight": 0.5, "masking.strategy": "temporal", "masking.temporal_segment": 20}
    plan = trial_plan(setup, params, tmp_path)
    assert (plan.loop.checkpoint_every_steps, plan.loop.fail_at_step, plan.loop.epochs) == (3, 5, 7)
    assert plan.config["losses"]["corr_weight"] == 0.5 and plan.config["masking"]["temporal_segment"] == 20
    config = trial_config(setup, params)
    trained = worker_plan(task, config, data, train_ids=train_ids, validation_ids=validation_ids, validation=None,
                          task_plan=task.plan(config, data, train_ids=train_ids, workers=1, options={}), run_dir=tmp_path)
    assert (plan.loop, plan.config, plan.data) == (trained.loop, trained.config, trained.data)
    assert config.training.num_to_keep == 4  # what the trial's trainer and Tune keep (no longer a fixed 2)
