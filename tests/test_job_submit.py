"""``ray job submit`` against a real head started on this machine: the way a user sends
preprocessing and training to a cluster.

The head is ``ray start --head --block`` in its own process group, with its own ports,
temp dir and authentication token (a file in that temp dir, named by
``RAY_AUTH_TOKEN_PATH``), so it neither touches ``~/.ray`` nor meets the session's Ray
(``ray_session``) or another Ray on the machine. The test process talks to it only over
HTTP (the Jobs API); it never joins it with ``ray.init``. One head serves the whole file
and is stopped by signalling its process group, never with ``ray stop``.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from jingle.datasets.synth import write_fusion_corpus
from jingle.training.checkpoints import load_state
from tests.test_preprocess_fusion import SMALL
from tests.test_train_fusion import write_config

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parent.parent
RAY_BIN = Path(sys.executable).with_name("ray")
# What a job does not need of the working tree (most are in .gitignore, which Ray honours too).
EXCLUDES = [".venv", "out", "runs", "jingle-demo", ".git", ".hypothesis", ".pytest_cache", "*.egg-info", "__pycache__"]
HEAD_START_SECONDS = 120
JOB_SECONDS = 240
# Either variable overrides the address a Jobs client is given.
ADDRESS_VARIABLES = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 now (all held open at once, so no two repeat)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def without_ray_variables(environment: dict[str, str]) -> dict[str, str]:
    """The environment less every ``RAY_*`` variable: ``RAY_ADDRESS`` / ``RAY_API_SERVER_ADDRESS``
    would redirect a client, and the session's ``ray.init`` sets ``RAY_AUTH_MODE`` in this process."""
    return {key: value for key, value in environment.items() if not key.startswith("RAY_")}


@dataclass(frozen=True)
class Head:
    """A running head: where its Jobs API answers and the token it accepts."""

    process: subprocess.Popen
    address: str  # http://127.0.0.1:<dashboard port>: the Jobs API
    agent_address: str  # http://127.0.0.1:<agent port>: the head node's agent, which runs the jobs
    temp_dir: Path
    token_path: Path
    gcs_address: str = ""  # 127.0.0.1:<port>: what a driver joins with ray.init (RAY_ADDRESS)

    @property
    def token(self) -> str:
        return self.token_path.read_text().strip()

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def client_env(self, *, token: bool = True) -> dict[str, str]:
        """Environment of a submitting process: with ``token``, the cluster's token by file
        (``RAY_AUTH_MODE=token`` is what makes Ray's client send it); without, a home that
        holds no ``~/.ray/auth_token`` either."""
        env = without_ray_variables(dict(os.environ))
        if token:
            return {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_path)}
        home = self.temp_dir / "home-without-token"
        home.mkdir(exist_ok=True)
        return {**env, "HOME": str(home)}

    def log_tail(self, characters: int = 2000) -> str:
        """The end of ``ray start``'s output and of the logs of the processes it starts first."""
        session_logs = self.temp_dir / "session_latest" / "logs"
        logs = [self.temp_dir / "head.log"] + [session_logs / name for name in (
            "gcs_server.out", "gcs_server.err", "raylet.out", "raylet.err", "dashboard.log", "dashboard.err")]
        return "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-characters:]}" for p in logs if p.exists())


def start_head(temp_dir: Path, *, node_environment: dict[str, str] | None = None) -> Head:
    """Start a head in ``temp_dir``; ``node_environment``: variables the node has in its own
    environment (as a cluster node has its storage credentials), which its workers inherit."""
    token_path = temp_dir / "auth_token"
    token_path.write_text(secrets.token_hex(32))
    token_path.chmod(0o600)
    (gcs, dashboard, client_server, agent_http, agent_grpc, runtime_env_agent, metrics, node_manager,
     object_manager) = free_ports(9)
    env = {
        **without_ray_variables(dict(os.environ)),
        **(node_environment or {}),
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_path),
        # On SIGTERM, stop at once rather than drain the node for up to 30 s (for Serve).
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
        # the job's `python` is this environment's, as on a node set up with the venv active
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    command = [
        str(RAY_BIN), "start", "--head", "--block", "--disable-usage-stats", "--log-style=record",
        # Ray swaps a loopback --node-ip-address for the machine's address (the GCS and
        # raylet listen there); the dashboard, which jobs go through, stays on 127.0.0.1.
        "--node-ip-address=127.0.0.1", f"--port={gcs}", "--num-cpus=2", f"--temp-dir={temp_dir}",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
        f"--ray-client-server-port={client_server}", f"--dashboard-agent-listen-port={agent_http}",
        f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={runtime_env_agent}",
        f"--metrics-export-port={metrics}", f"--node-manager-port={node_manager}",
        f"--object-manager-port={object_manager}",
        "--min-worker-port=0", "--max-worker-port=0",  # 0: each worker takes a port the OS gives it
    ]
    with open(temp_dir / "head.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, cwd=temp_dir, start_new_session=True)
    return Head(process, f"http://127.0.0.1:{dashboard}", f"http://127.0.0.1:{agent_http}", temp_dir, token_path,
                f"127.0.0.1:{gcs}")


def wait_for_jobs_api(head: Head) -> None:
    """Until the dashboard lists jobs and the head node's agent answers (the dashboard waits
    only 10 s for that agent before it refuses a job: "No available agent to submit job");
    fails with the head's log."""
    deadline = time.monotonic() + HEAD_START_SECONDS
    last = "no answer"
    for url in (f"{head.address}/api/jobs/", f"{head.agent_address}/api/healthz"):
        while time.monotonic() < deadline:
            if head.process.poll() is not None:
                pytest.fail(f"ray start --head exited with {head.process.returncode}:\n{head.log_tail()}")
            try:
                answer = requests.get(url, headers=head.headers, timeout=5)
                if answer.status_code == 200:
                    break
                last = f"{url}: {answer.status_code} {answer.text[:200]}"
            except requests.RequestException as error:
                last = f"{url}: {error!r}"
            time.sleep(0.5)
        else:
            pytest.fail(f"the head did not answer in {HEAD_START_SECONDS} s (last: {last}):\n{head.log_tail()}")


def stop_head(head: Head) -> None:
    """SIGTERM ``ray start`` alone, which stops what it started in a few seconds (signalling
    the whole group at once kills the GCS first, and ``ray start`` then waits about a minute
    for it); SIGKILL the group if anything lingers, then any process still naming this
    head's temp dir (a worker in a process group of its own)."""
    group = head.process.pid
    head.process.terminate()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (head.process.poll() is None or _group_alive(group)):
        time.sleep(0.2)
    if _group_alive(group):
        os.killpg(group, signal.SIGKILL)
    head.process.wait(timeout=10)
    for pid in _processes_naming(str(head.temp_dir)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
        return True
    except ProcessLookupError:
        return False


def _processes_naming(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


@pytest.fixture(scope="module")
def head():
    """The file's head, stopped when the file is done (whatever happened)."""
    # Unix socket paths under the temp dir must stay short (~107 characters).
    temp_dir = Path(tempfile.mkdtemp(prefix="rj", dir="/tmp"))
    started = start_head(temp_dir)
    try:
        wait_for_jobs_api(started)
        yield started
    finally:
        stop_head(started)
        shutil.rmtree(temp_dir, ignore_errors=True)


def wait_for_job(client, job_id: str, seconds: float = JOB_SECONDS):
    """The job's final status; fails with its logs if it is not over in ``seconds``."""
    from ray.job_submission import JobStatus

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = client.get_job_status(job_id)
        if status in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
            return status
        time.sleep(0.5)
    client.stop_job(job_id)
    pytest.fail(f"job {job_id} still {status} after {seconds} s:\n{client.get_job_logs(job_id)[-3000:]}")


def submit(client, entrypoint: str, **options) -> str:
    """Submit ``entrypoint`` with the repository as its working dir; the job id."""
    return client.submit_job(entrypoint=entrypoint, runtime_env={"working_dir": str(REPO), "excludes": EXCLUDES},
                             **options)


def submit_and_wait(client, entrypoint: str, **options) -> tuple[str, str]:
    """Submit ``entrypoint`` and wait; the job id and its logs once it SUCCEEDED."""
    from ray.job_submission import JobStatus

    job_id = submit(client, entrypoint, **options)
    status = wait_for_job(client, job_id)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, f"{job_id} {status}: {client.get_job_info(job_id).message}\n{logs[-3000:]}"
    return job_id, logs


def preprocessing_command(python: str, pairs: Path, out: Path) -> list[str]:
    return [python, "-m", "pipelines.preprocess_fusion", "--pairs", str(pairs), "--out", str(out),
            "--segment-seconds", "1", "--quiet"]


def training_command(python: str, shards: Path, config: Path, storage: Path) -> list[str]:
    return [python, "-m", "pipelines.train_fusion", "--data", str(shards), "--config", str(config),
            "--storage", str(storage), "--workers", "1", "--name", "submitted"]


@dataclass(frozen=True)
class Submitted:
    """The file's shared jobs: a finished preprocessing job, and the training job queued on
    its shards (it runs while the other tests submit theirs, as work queues on a cluster)."""

    pairs: Path
    out: Path
    preprocessing_id: str
    preprocessing_logs: str
    training_id: str
    storage: Path


def unredirected_client(head: Head):
    """A ``JobSubmissionClient`` for the head, sending its token itself (the test process
    may hold the session's Ray, whose token Ray's own header lookup would find). Make it
    with ``ADDRESS_VARIABLES`` unset."""
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(head.address, headers=head.headers)


@pytest.fixture
def client(head, monkeypatch):
    for name in ADDRESS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return unredirected_client(head)


@pytest.fixture(scope="module")
def submitted(head, tmp_path_factory) -> Submitted:
    root = tmp_path_factory.mktemp("submitted")
    write_fusion_corpus(root / "pairs", SMALL)
    pairs, out, storage = root / "pairs", root / "shards", root / "storage"
    with pytest.MonkeyPatch.context() as patch:
        for name in ADDRESS_VARIABLES:
            patch.delenv(name, raising=False)
        client = unredirected_client(head)
        preprocessing_id = f"jingle-preprocess-{uuid.uuid4().hex[:8]}"
        job_id, logs = submit_and_wait(client, shlex.join(preprocessing_command(sys.executable, pairs, out)),
                                       submission_id=preprocessing_id)
        assert job_id == preprocessing_id
        config = write_config(root, epochs=1)
        training_id = submit(client, shlex.join(training_command(sys.executable, out, config, storage)))
    return Submitted(pairs, out, preprocessing_id, logs, training_id, storage)


def test_the_head_requires_its_token(head):
    assert requests.get(f"{head.address}/api/authentication_mode", timeout=10).json()["authentication_mode"] == "token"
    missing = requests.get(f"{head.address}/api/jobs/", timeout=10)
    wrong = requests.get(f"{head.address}/api/jobs/", headers={"Authorization": "Bearer not-the-token"}, timeout=10)
    assert (missing.status_code, missing.text) == (401, "Unauthorized: Missing authentication token")
    assert (wrong.status_code, wrong.text) == (403, "Forbidden: Invalid authentication token")


def test_a_submitted_preprocessing_job_writes_the_shards(submitted):
    manifest = json.loads((submitted.out / "manifest.json").read_text())
    parquet = sorted((submitted.out / "shards").glob("*.parquet"))
    assert parquet and manifest["totals"]["rows"] > 0
    assert f"preprocessed 4 pairs into {submitted.out}" in submitted.preprocessing_logs
    assert f"({manifest['totals']['rows']} segments in {len(parquet)} shards in all)" in submitted.preprocessing_logs


def test_a_reused_submission_id_is_refused(client, submitted):
    with pytest.raises(RuntimeError, match=f"Job with submission_id {submitted.preprocessing_id} already exists"):
        client.submit_job(entrypoint="true", submission_id=submitted.preprocessing_id)


def ray_job_submit(head: Head, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``ray job submit --address HEAD ARGS`` as a user types it, from the repository root."""
    return subprocess.run([str(RAY_BIN), "job", "submit", "--address", head.address, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=JOB_SECONDS)


def test_the_cli_submits_it_again_with_the_token_and_there_is_nothing_to_do(head, submitted):
    before = {p: p.stat().st_mtime_ns for p in (submitted.out / "shards").iterdir()}
    submission_id = f"jingle-cli-{uuid.uuid4().hex[:8]}"
    result = ray_job_submit(head, "--working-dir", str(REPO), "--submission-id", submission_id, "--",
                            *preprocessing_command("python", submitted.pairs, submitted.out), env=head.client_env())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"Job '{submission_id}' succeeded" in result.stdout  # the CLI tails the job's log until it ends
    assert f"nothing to do: 4 pairs already in {submitted.out}" in result.stdout
    assert {p: p.stat().st_mtime_ns for p in (submitted.out / "shards").iterdir()} == before


def test_the_cli_without_the_token_is_refused(head):
    refused = ray_job_submit(head, "--working-dir", str(REPO), "--", "python", "-m", "pipelines.preprocess_fusion",
                             "--help", env=head.client_env(token=False))
    assert refused.returncode == 1
    # the last lines of Ray's traceback (more advice on where the token may be follows)
    assert "AuthenticationError: Authentication required: Unauthorized: Missing authentication token" in refused.stderr
    assert "Note: RAY_AUTH_MODE is currently 'disabled' (not 'token')" in refused.stderr, refused.stderr[-3000:]


def test_the_queued_training_job_leaves_a_checkpoint(client, submitted):
    from ray.job_submission import JobStatus

    job_id = submitted.training_id
    status = wait_for_job(client, job_id)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, f"{job_id} {status}: {client.get_job_info(job_id).message}\n{logs[-3000:]}"
    assert "trained to step" in logs and "(epoch 1)" in logs
    checkpoints = sorted((submitted.storage / "submitted").glob("checkpoint_*/state.pt"))
    assert checkpoints, logs[-3000:]
    assert load_state(checkpoints[-1].parent, kind="fusion").epoch == 1
