"""``s3://`` storage end to end against a local S3 server (moto): preprocess into a bucket,
train from it with checkpoints in it, resume, fuse from a checkpoint in it into it; the
bucket lock; a missing bucket refused in one line.

The commands run as subprocesses joined (``RAY_ADDRESS``, with its token) to a head of
their own, whose node holds the bucket's credentials in its environment, as a cluster node
holds its own: ``init_ray`` hands the job's workers the driver's endpoint and region, never
its credentials (docs/security.md).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jingle.core.storage import Location, StorageError, check_writable
from jingle.datasets.shards import LOCK, FolderBusy, ShardStore
from jingle.datasets.synth import CorpusSpec, write_fusion_corpus
from tests.test_fusion_training import TINY_MODEL
from tests.test_job_submit import Head, start_head, stop_head, wait_for_jobs_api

pytestmark = pytest.mark.ray  # the commands join a Ray head of the module's own

REPO = Path(__file__).resolve().parent.parent
BUCKET = "jingle-test"
CONFIG = {
    "model": TINY_MODEL,
    "validation": {"score_segments": 1},
    "training": {"epochs": 1, "batch_size": 2, "learning_rate": 0.003, "warmup_steps": 0, "schedule": "constant",
                 "validation_fraction": 0.25},
}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 with one bucket; yields the environment that reaches it."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    environment = {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_EC2_METADATA_DISABLED": "true",
        "JINGLE_HOME": str(tmp_path_factory.mktemp("jingle-home")),  # the MLflow store of a bucket storage
    }
    boto3.client("s3", endpoint_url=environment["AWS_ENDPOINT_URL"], region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)
    yield environment
    server.stop()


@pytest.fixture(scope="module")
def storage_head(s3):
    """A head whose node has the bucket's credentials, and nothing else of ``s3``, in its
    environment; stopped with the module."""
    credentials = {key: s3[key] for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    # Unix socket paths under the temp dir must stay short (~107 characters).
    temp_dir = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))
    head = start_head(temp_dir, node_environment=credentials)
    try:
        wait_for_jobs_api(head)
        yield head
    finally:
        stop_head(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def s3_env(s3, monkeypatch):
    for key, value in s3.items():
        monkeypatch.setenv(key, value)
    return s3


def jingle(module: str, *args: str, env: dict, head: Head, timeout: int = 420) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"pipelines.{module}", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**head.client_env(), **env, "RAY_ADDRESS": head.gcs_address})


def test_a_location_reads_writes_and_lists_a_bucket(s3_env):
    root = Location.of(f"s3://{BUCKET}/unit/")
    assert root.uri == f"s3://{BUCKET}/unit" and root.path == f"{BUCKET}/unit" and not root.is_local
    (root / "a" / "x.json").write_text('{"x": 1}')
    (root / "b.bin").write_bytes(b"\x00\x01")
    assert json.loads((root / "a" / "x.json").read_text()) == {"x": 1}
    assert [entry.name for entry in root.list()] == ["a", "b.bin"] and (root / "a").is_dir()
    (root / "b.bin").delete()
    assert not (root / "b.bin").exists()
    with pytest.raises(FileNotFoundError):
        (root / "b.bin").read_bytes()


def test_a_missing_bucket_is_refused_in_one_line(s3, storage_head, tmp_path):
    write_fusion_corpus(tmp_path / "pairs", CorpusSpec(pairs=1, min_seconds=2.0, max_seconds=2.0, seed=1))
    result = jingle("preprocess_fusion", "--pairs", str(tmp_path / "pairs"), "--out", "s3://no-such-bucket/shards", "--quiet",
                    env=s3, head=storage_head, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip() == "jingle preprocess fusion: error: --out s3://no-such-bucket/shards: bucket 'no-such-bucket' does not exist"


def test_a_bucket_folder_is_locked_by_an_object_and_a_dead_runs_lock_is_taken_over(s3_env):
    root = Location.of(f"s3://{BUCKET}/locked")
    settings = {"codec": {"id": "mel-test"}}
    with ShardStore(root, kind="fusion", settings=settings):
        holder = json.loads((root / LOCK).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(FolderBusy, match=f"pid {os.getpid()}"):
            ShardStore(root, kind="fusion", settings=settings)
    assert not (root / LOCK).exists()  # released when the run ends
    # a run killed on this host left its lock: its process is gone, so the lock is stale
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (root / LOCK).write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "started": 0, "heartbeat": 1e12}))
    with ShardStore(root, kind="fusion", settings=settings) as store:
        assert store.took_over["pid"] == dead.pid


@pytest.fixture(scope="module")
def bucket_run(s3, storage_head, tmp_path_factory):
    """Preprocess into the bucket, train one epoch there, then resume to a second."""
    root = tmp_path_factory.mktemp("s3-run")
    write_fusion_corpus(root / "pairs", CorpusSpec(pairs=4, min_seconds=3.2, max_seconds=3.2, seed=7))
    (root / "config.json").write_text(json.dumps(CONFIG))
    shards, storage = f"s3://{BUCKET}/shards", f"s3://{BUCKET}/runs"
    preprocessed = jingle("preprocess_fusion", "--pairs", str(root / "pairs"), "--out", shards, "--segment-seconds", "1",
                          "--quiet", env=s3, head=storage_head)
    rerun = jingle("preprocess_fusion", "--pairs", str(root / "pairs"), "--out", shards, "--segment-seconds", "1", "--quiet",
                   env=s3, head=storage_head)
    train = ["--data", shards, "--config", str(root / "config.json"), "--storage", storage, "--workers", "1", "--name", "s3run"]
    first = jingle("train_fusion", *train, env=s3, head=storage_head)
    resumed = jingle("train_fusion", *train, "--resume", "--override", "training.epochs=2", env=s3, head=storage_head)
    return {"root": root, "shards": shards, "storage": storage, "preprocessed": preprocessed, "rerun": rerun,
            "first": first, "resumed": resumed}


def test_preprocessing_writes_its_shards_manifest_and_rejects_into_the_bucket(bucket_run, s3_env):
    assert bucket_run["preprocessed"].returncode == 0, bucket_run["preprocessed"].stderr[-3000:]
    shards = Location.of(bucket_run["shards"])
    manifest = json.loads((shards / "manifest.json").read_text())
    assert manifest["totals"]["items"] == 4 and manifest["totals"]["rows"] == 4 * 3
    files = [entry.name for entry in (shards / "shards").list()]
    assert sorted(files) == sorted(manifest["files"])  # no temporary or orphan object left
    table = pq.read_table(io.BytesIO((shards / "shards" / files[0]).read_bytes()))
    assert table.num_rows == manifest["files"][files[0]]["rows"]
    assert (shards / "rejects.parquet").exists() and not (shards / "journal").list() and not (shards / LOCK).exists()
    assert bucket_run["rerun"].returncode == 0 and bucket_run["rerun"].stdout.startswith(
        f"nothing to do: 4 pairs already in {bucket_run['shards']}")


def test_training_checkpoints_into_the_bucket_and_resumes_from_it(bucket_run, s3_env):
    first, resumed = bucket_run["first"], bucket_run["resumed"]
    assert first.returncode == 0, first.stderr[-3000:]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    steps = [int(run.stdout.split("trained to step ")[1].split()[0]) for run in (first, resumed)]
    assert "(epoch 1)" in first.stdout and "(epoch 2)" in resumed.stdout and steps[1] == 2 * steps[0]
    best = best_checkpoint(bucket_run)
    assert best.startswith(f"{bucket_run['storage']}/s3run/checkpoint_")
    assert (Location.of(best) / "state.pt").exists()
    assert not Path(REPO, "s3:").exists()  # no local folder named after the scheme
    # MLflow: the store is the SQLite file of the machine that ran the command, the artifacts in the bucket
    from mlflow.tracking import MlflowClient

    run_id, uri = next(line.split()[2::2] for line in resumed.stdout.splitlines() if line.strip().startswith("MLflow run"))
    assert uri == f"sqlite:///{Path(s3_env['JINGLE_HOME']) / 'mlflow.db'}"
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.artifact_uri.startswith(f"{bucket_run['storage']}/mlflow-artifacts/")
    assert MlflowClient(uri).list_artifacts(run_id) and len(MlflowClient(uri).get_metric_history(run_id, "total")) == 2


def best_checkpoint(bucket_run) -> str:
    """The resumed training's best checkpoint, as it printed it (the run must have worked)."""
    resumed = bucket_run["resumed"]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return next(line.split()[-1] for line in resumed.stdout.splitlines() if "best checkpoint" in line)


def test_fusing_from_a_bucket_checkpoint_into_the_bucket(bucket_run, s3, s3_env, storage_head):
    best = best_checkpoint(bucket_run)
    out = f"s3://{BUCKET}/fused"
    result = jingle("fuse", "--checkpoint", best, "--batch", str(bucket_run["root"] / "pairs"), "--out", out,
                    env=s3, head=storage_head)
    assert result.returncode == 0, result.stderr[-3000:]
    names = sorted(entry.name for entry in Location.of(out).list())
    assert len([name for name in names if name.endswith(".wav")]) == 4
    assert {name.rsplit(".", 1)[1] for name in names} == {"wav", "png", "json"}
    report = json.loads((Location.of(out) / names[[n.endswith(".json") for n in names].index(True)]).read_text())
    assert report["checkpoint"].startswith(f"{bucket_run['storage']}/s3run/")


def test_check_writable_names_the_missing_bucket(s3_env):
    with pytest.raises(StorageError, match="bucket 'nope-bucket' does not exist"):
        check_writable(Location.of("s3://nope-bucket/x"), "--storage")


def test_a_search_keeps_its_trials_and_outputs_in_the_bucket(bucket_run, s3, s3_env, storage_head):
    (bucket_run["root"] / "space.yaml").write_text("parameters:\n  training.learning_rate: {loguniform: [1.0e-4, 1.0e-2]}\n")
    storage = f"s3://{BUCKET}/searches"
    result = jingle("tune_fusion", "--data", bucket_run["shards"], "--space", str(bucket_run["root"] / "space.yaml"),
                    "--config", str(bucket_run["root"] / "config.json"), "--storage", storage, "--name", "s3search",
                    "--samples", "1", "--max-epochs", "1", env=s3, head=storage_head)
    assert result.returncode == 0, result.stderr[-3000:]
    search = Location.of(storage) / "s3search"
    assert json.loads((search / "best_config.json").read_text())["training"]["epochs"] == 1
    assert (search / "trials.csv").read_text().count("\n") == 2 and (search / "trials.png").exists()
    best = next(line.split()[-1] for line in result.stdout.splitlines() if "checkpoint" in line and "s3://" in line)
    assert best.startswith(f"{storage}/s3search/") and (Location.of(best) / "state.pt").exists()
