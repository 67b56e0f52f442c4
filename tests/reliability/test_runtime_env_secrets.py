"""No storage credential travels in Ray's ``runtime_env`` (``pipelines.common.init_ray``).

``runtime_env={"env_vars": ...}`` is no secret channel: a worker started for it carries the
serialized runtime env in its command line (``setup_worker.py
--serialized-runtime-env-context=...``, until it execs into ``default_worker.py``), the
session's ``logs/runtime_env_agent.log`` (mode 644) records every runtime env it creates,
and the job's config (what the Jobs and State APIs return) holds it.

The end-to-end test runs a driver in a child process that joins the session's Ray (as a job
joins a cluster, whose nodes have their own environment) through the project's ``init_ray``,
with a fake secret, key id and session token and a marked endpoint in the driver's
environment, and runs one task. The endpoint, which may travel, is the positive control: it
must show where runtime_env shows, so the same checks would see a secret sent that way. (A
local Ray that ``init_ray`` starts itself passes the driver's environment, credentials
included, to its workers through the raylet; checked by hand, not here: a second Ray start
costs a test session ~30 s.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from jingle.core.storage import NODE_CREDENTIALS, STORAGE_SETTINGS
from jingle.pipelines.common import job_runtime_env

REPO = Path(__file__).resolve().parents[2]


def test_the_runtime_env_holds_the_storage_settings_and_no_credential(monkeypatch):
    for key in os.environ:
        if key.startswith("AWS_") or key in STORAGE_SETTINGS or key in NODE_CREDENTIALS:
            monkeypatch.delenv(key)
    assert job_runtime_env() == {}  # nothing set: no runtime_env at all
    for key in NODE_CREDENTIALS:
        monkeypatch.setenv(key, f"jingle-fake-secret-1234567890-{key}")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert job_runtime_env() == {
        "runtime_env": {"env_vars": {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_DEFAULT_REGION": "eu-west-1"}}
    }
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} <= set(NODE_CREDENTIALS)
    assert not set(STORAGE_SETTINGS) & set(NODE_CREDENTIALS)


CHILD = r'''
import json, os, sys, threading
from pathlib import Path
import ray
from jingle.pipelines.common import init_ray

CREDENTIALS = {key: os.environ[key] for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")}
sampled = {key: [] for key in CREDENTIALS}
stop = threading.Event()


def arguments_of_every_process():
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                yield (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                pass


def sample():
    # A worker started for a runtime env shows it in its arguments only until it execs into
    # default_worker.py: sample every process's arguments while the job starts and runs.
    while not stop.is_set():
        for arguments in arguments_of_every_process():
            for key, value in CREDENTIALS.items():
                if value in arguments:
                    sampled[key].append(arguments[:300])
        stop.wait(0.2)


@ray.remote(num_cpus=0.1)
def worker_view():
    return {"argv": sys.argv, "secret": os.environ.get("AWS_SECRET_ACCESS_KEY"),
            "key_id": os.environ.get("AWS_ACCESS_KEY_ID"), "endpoint": os.environ.get("AWS_ENDPOINT_URL")}


sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
init_ray(num_cpus=1)
seen = ray.get(worker_view.remote(), timeout=240)
session_dir = ray._private.worker._global_node.get_session_dir_path()
seen["session_dir"] = session_dir
seen["job_runtime_env"] = ray.get_runtime_context().runtime_env  # the job's config, as GCS holds it
# the Ray processes of this session (raylet, GCS, agents, workers) while the job is connected
seen["ray_processes"] = [arguments for arguments in arguments_of_every_process() if session_dir in arguments]
stop.set()
sampler.join()
seen["sampled"] = sampled
ray.shutdown()
with open(os.environ["JINGLE_TEST_OUT"], "w") as out:
    json.dump(seen, out)
'''


def files_holding(root: Path, needle: str) -> list[str]:
    holding = []
    for path in root.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink() and needle.encode() in path.read_bytes():
                holding.append(str(path.relative_to(root)))
        except OSError:
            pass
    return holding


def run_child(tmp_path: Path, environment: dict[str, str]) -> dict:
    """Run ``CHILD`` (a driver that calls ``init_ray`` and runs one task); what it saw."""
    child = subprocess.Popen([sys.executable, "-c", CHILD], cwd=REPO, start_new_session=True,
                             env={**environment, "JINGLE_TEST_OUT": str(tmp_path / "seen.json"), "PYTHONPATH": str(REPO)},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = child.communicate(timeout=300)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    assert child.returncode == 0, output[-3000:]
    return json.loads((tmp_path / "seen.json").read_text())


def fake_credentials() -> dict[str, str]:
    marker = uuid.uuid4().hex[:12]
    return {
        "AWS_ACCESS_KEY_ID": f"jingle-fake-keyid-1234567890-{marker}",
        "AWS_SECRET_ACCESS_KEY": f"jingle-fake-secret-1234567890-{marker}",
        "AWS_SESSION_TOKEN": f"jingle-fake-token-1234567890-{marker}",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:9/endpoint-{marker}",  # not a secret: travels in runtime_env
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def assert_no_credential_leaked(seen: dict, aws: dict[str, str]) -> None:
    """No credential in any command line seen, in the job's runtime env or in the session's
    files; the endpoint in the runtime env and in runtime_env_agent.log (the positive control)."""
    session = Path(seen["session_dir"])
    assert seen["job_runtime_env"] == {"env_vars": {key: aws[key] for key in ("AWS_ENDPOINT_URL", "AWS_EC2_METADATA_DISABLED")}}
    assert seen["ray_processes"], "no process of the session was seen: the command-line check checked nothing"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        value = aws[key]
        assert not any(value in argument for argument in seen["argv"]), key
        assert not any(value in arguments for arguments in seen["ray_processes"]), key
        assert seen["sampled"][key] == [], f"{key} was in a process's arguments: {seen['sampled'][key]}"
        assert files_holding(session, value) == [], f"{key} is in the session's files"
    assert "logs/runtime_env_agent.log" in files_holding(session, aws["AWS_ENDPOINT_URL"])


@pytest.mark.ray
def test_a_job_joining_a_cluster_sends_the_endpoint_and_no_credential(ray_address, tmp_path):
    """As on a cluster: the driver joins a running Ray (``RAY_ADDRESS``), whose node has its own
    environment; the job's workers get the endpoint, and the driver's credentials reach nothing."""
    aws = fake_credentials()
    environment = {key: value for key, value in os.environ.items() if not key.startswith("AWS_") and key != "RAY_TMPDIR"}
    seen = run_child(tmp_path, {**environment, **aws, "RAY_ADDRESS": ray_address})
    assert seen["endpoint"] == aws["AWS_ENDPOINT_URL"]
    assert seen["secret"] != aws["AWS_SECRET_ACCESS_KEY"] and seen["key_id"] != aws["AWS_ACCESS_KEY_ID"]
    assert_no_credential_leaked(seen, aws)
