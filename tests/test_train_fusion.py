"""Fusion training on the session's local Ray: the real TorchTrainer, Ray Data and MLflow.

One small shard folder (mel, 1 s segments) feeds every test; the model is tiny.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jingle.datasets.synth import CorpusSpec, write_fusion_corpus
from jingle.training.checkpoints import CheckpointError, load_state
from jingle.pipelines import preprocess_fusion, train_fusion
from jingle.pipelines.shard_data import split_pair_ids
from jingle.pipelines.train import TrainSummary
from tests.conftest import write_training_config
from tests.reliability.test_retries import worker_starts
from tests.test_fusion_training import TINY_MODEL

pytestmark = pytest.mark.ray

CONFIG = {
    "model": TINY_MODEL,
    "masking": {"strategy": "temporal", "temporal_segment": 20, "fade_frames": 4},
    # val_score on 2 segments, without the shortcuts (tests/test_loop.py checks those): the
    # validations of these runs' 3 epochs stay short
    "validation": {"score_segments": 2, "score_shortcuts": False},
    "training": {"epochs": 3, "batch_size": 2, "learning_rate": 0.003, "warmup_steps": 0, "schedule": "constant",
                 "validation_fraction": 0.25, "num_to_keep": 2, "max_failures": 2},
}


@pytest.fixture(scope="module")
def shards(fusion_train_shards) -> Path:
    return fusion_train_shards


def write_config(folder: Path, **training) -> Path:
    return write_training_config(folder, CONFIG, **training)


def train(shards: Path, config: Path, storage: Path, **spec) -> TrainSummary:
    return train_fusion.run(train_fusion.spec(data=str(shards), config=str(config), storage=storage, workers=2, **spec))


def mlflow_run(summary: TrainSummary):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(summary.tracking_uri)
    return client, client.get_run(summary.run_id)


@pytest.fixture(scope="module")
def clean_run(shards, tmp_path_factory):
    folder = tmp_path_factory.mktemp("clean")
    return train(shards, write_config(folder), folder / "runs", name="clean")


def test_training_completes_with_checkpoints_and_the_loss_falls(clean_run):
    state = load_state(clean_run.latest_checkpoint, kind="fusion")
    assert state.epoch == 3 and state.step == clean_run.step > 0
    assert state.codec["name"] == "mel" and state.config["training"]["epochs"] == 3
    assert state.data["segment_seconds"] == 1  # jingle fuse chunks by it
    client, run = mlflow_run(clean_run)
    history = [m.value for m in client.get_metric_history(run.info.run_id, "total")]
    assert len(history) == 3 and history[-1] < history[0]
    assert len(client.get_metric_history(run.info.run_id, "val_total")) == 3


def test_a_run_without_the_score_is_summarized_by_its_latest_checkpoint(clean_run):
    """validation.score_segments 0 (the demo's config): val_score reads -inf every epoch, so
    Ray's ranking of the kept checkpoints is arbitrary; the summary's best is the latest."""
    import math
    from types import SimpleNamespace

    from jingle.core.storage import Location
    from jingle.pipelines.tasks import get_task
    from jingle.pipelines.train import RunPlace, summarize

    latest = SimpleNamespace(path=clean_run.latest_checkpoint)
    ranked_first = SimpleNamespace(path=str(Path(clean_run.run_dir) / "checkpoint_ranked_first"))

    def summary(val_score: float) -> TrainSummary:
        result = SimpleNamespace(error=None, checkpoint=latest, metrics={"val_score": val_score, "total": 1.0},
                                 get_best_checkpoint=lambda metric, mode: ranked_first)
        place = RunPlace(Location.of(Path(clean_run.run_dir).parent), "clean", Location.of(clean_run.run_dir))
        return summarize(result, task=get_task("fusion"), place=place, has_validation=True, tracking_uri="", run_id="", seconds=1.0)

    unscored = summary(-math.inf)
    assert unscored.best_checkpoint == unscored.latest_checkpoint == clean_run.latest_checkpoint
    assert "val_score" not in unscored.report().splitlines()[0]
    scored = summary(0.5)
    assert scored.best_checkpoint == ranked_first.path and "val_score 0.5000" in scored.report()


def test_workers_ran_and_the_mlflow_run_holds_metrics_and_artifacts(clean_run):
    client, run = mlflow_run(clean_run)
    assert run.info.status == "FINISHED" and run.info.end_time >= run.info.start_time  # ended by the driver
    metrics = set(run.data.metrics)
    assert {"total", "spectral", "rms_in", "rms_tgt", "novelty", "corr_cost", "val_total", "grad_norm"} <= metrics
    assert {"input_rhythm", "input_harmony", "input_timbre", "target_rhythm", "target_harmony", "target_timbre"} <= metrics
    assert run.data.params["config.training.epochs"] == "3"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.json", "mask_temporal.png", "fused_example.wav", "fused_example.png"} <= artifacts
    workers = sorted((Path(clean_run.run_dir) / "workers").glob("rank-*.json"))
    assert [json.loads(w.read_text())["rank"] for w in workers] == [0, 1]


def test_a_rerun_with_the_same_name_resumes_the_step_counter(shards, tmp_path, clean_run):
    first = train(shards, write_config(tmp_path, epochs=2), tmp_path / "runs", name="resumed")
    assert first.step == 2 * (clean_run.step // 3)
    (tmp_path / "more").mkdir()
    again = train(shards, write_config(tmp_path / "more", epochs=3), tmp_path / "runs", name="resumed", resume=True)
    assert again.step == clean_run.step and again.run_id == first.run_id
    client, run = mlflow_run(again)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "total")] == [first.step // 2, first.step, again.step]


def test_a_worker_killed_mid_run_costs_only_the_work_since_the_checkpoint(shards, tmp_path, clean_run, capsys):
    summary = train(shards, write_config(tmp_path, fail_at_step=3, checkpoint_every_steps=2), tmp_path / "runs", name="faulty")
    assert (Path(summary.run_dir) / ".fault-injected-at-3").exists()
    assert summary.step == clean_run.step
    assert load_state(summary.latest_checkpoint, kind="fusion").step == clean_run.step
    # the driver started the group once more (training.max_failures), and said so in one line
    assert worker_starts(Path(summary.run_dir)) == [2, 2]
    restarts = [line for line in capsys.readouterr().err.splitlines() if "restarting from the latest checkpoint" in line]
    assert len(restarts) == 1 and "(restart 1 of 2)" in restarts[0]


def test_resume_needs_an_existing_run_and_bad_configs_exit_2(shards, tmp_path):
    config = write_config(tmp_path)
    common = ["--data", str(shards), "--storage", str(tmp_path / "runs")]
    assert train_fusion.main([*common, "--config", str(config), "--name", "nothing", "--resume"]) == 2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"training": {"epochs": 0}}))
    assert train_fusion.main([*common, "--config", str(bad)]) == 2
    assert train_fusion.main([*common, "--config", str(config), "--override", "training.batch_size=1000"]) == 2
    assert train_fusion.main(["--data", str(tmp_path / "nowhere"), "--config", str(config)]) == 2


def test_a_corrupt_checkpoint_is_refused(tmp_path):
    (tmp_path / "state.pt").write_bytes(b"PK\x03\x04 this is not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt or not a jingle checkpoint"):
        load_state(tmp_path, kind="fusion")


def test_the_split_is_by_pair_and_stable():
    pairs = [f"pair_{i:03d}" for i in range(50)]
    train_ids, validation_ids = split_pair_ids(pairs, 0.2, seed=0)
    assert not set(train_ids) & set(validation_ids) and len(train_ids) + len(validation_ids) == 50
    assert 4 <= len(validation_ids) <= 18
    grown_train, grown_validation = split_pair_ids(pairs + ["pair_new"], 0.2, seed=0)
    assert set(validation_ids) <= set(grown_validation)  # adding a pair moves no old pair
    assert split_pair_ids(["a", "b"], 0.1, seed=0)[1] != []


@pytest.fixture(scope="module")
def validation_shards(ray_session, tmp_path_factory) -> Path:
    """Three held-out pairs (seeds the training corpus does not use), preprocessed alike."""
    root = tmp_path_factory.mktemp("validation-data")
    write_fusion_corpus(root / "pairs", CorpusSpec(pairs=3, min_seconds=3.2, max_seconds=3.2, seed=5), first_index=500)
    preprocess_fusion.run(preprocess_fusion.spec(pairs=str(root / "pairs"), out=root / "shards", segment_seconds=1, quiet=True))
    return root / "shards"


def test_a_validation_folder_validates_and_every_data_pair_trains(shards, validation_shards, tmp_path):
    from jingle.pipelines.shard_data import ShardData

    data, held_out = ShardData.open(shards), ShardData.open(validation_shards, flag="--validation")
    train_ids, validation_ids = data.split(0.25, 0, validation=held_out)
    assert train_ids == sorted(data.rows_by_pair) and validation_ids == sorted(held_out.rows_by_pair)
    plan = data.plan(("input_latent", "pair_id"), train_ids, validation_ids, max_in_memory_mb=64, validation=held_out)
    context = type("Context", (), {"rank": 0, "world_size": 1})()
    train_rows, validation_rows = plan.rows(context, seed=0)
    assert len(train_rows) == sum(data.rows_by_pair.values()) and len(validation_rows) == sum(held_out.rows_by_pair.values())
    # interleaved: the first rows validation scores come from every held-out pair
    first = next(validation_rows.batches(3, epoch=0))
    assert sorted(first["pair_id"]) == validation_ids

    summary = train(shards, write_config(tmp_path, epochs=1), tmp_path / "runs", name="held-out", validation=str(validation_shards))
    state = load_state(summary.best_checkpoint, kind="fusion")
    assert state.data["validation_shards"] == str(validation_shards) and state.data["validation_pairs"] == 3
    assert state.data["train_pairs"] == len(data.rows_by_pair)
    assert "val_score" in summary.metrics and "val_total" in summary.metrics


def test_a_validation_folder_of_training_pairs_or_another_segmenting_is_refused(shards, tmp_path, capsys):
    config = write_config(tmp_path, epochs=1)
    common = ["--config", str(config), "--storage", str(tmp_path / "runs")]
    assert train_fusion.main(["--data", str(shards), "--validation", str(shards), *common]) == 2
    assert "validation pairs must be held out" in capsys.readouterr().err
    other = tmp_path / "other"
    write_fusion_corpus(tmp_path / "pairs", CorpusSpec(pairs=2, min_seconds=3.0, max_seconds=3.0, seed=9), first_index=900)
    preprocess_fusion.run(preprocess_fusion.spec(pairs=str(tmp_path / "pairs"), out=other, segment_seconds=1.5, quiet=True))
    assert train_fusion.main(["--data", str(shards), "--validation", str(other), *common]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "preprocessed with segmenting" in error[0]


MULTINODE_DRIVER = """
import json, sys
import ray
from ray.cluster_utils import Cluster

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
for _ in range(2):
    cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
ray.init(address=cluster.address)
from jingle.pipelines import train_fusion
code = train_fusion.main(sys.argv[1:])
ray.shutdown()
cluster.shutdown()
sys.exit(code)
"""


def test_training_runs_on_a_two_node_cluster(shards, tmp_path):
    """A real multi-node Ray cluster on this machine (head plus two worker nodes): with a
    whole CPU per worker, the two workers cannot share a node."""
    import os
    import subprocess
    import sys

    config = write_config(tmp_path, epochs=1)
    storage = tmp_path / "shared-storage"
    result = subprocess.run(
        [sys.executable, "-c", MULTINODE_DRIVER, "--data", str(shards), "--config", str(config), "--storage", str(storage),
         "--workers", "2", "--name", "multinode"],
        cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=600,
        env={key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    workers = [json.loads(p.read_text()) for p in sorted((storage / "multinode" / "workers").glob("rank-*.json"))]
    assert len(workers) == 2 and len({w["node_id"] for w in workers}) == 2
    assert "trained to step" in result.stdout
