"""The cluster's MLflow tracking server behind MLflow's basic-auth login (deploy/mlflow_server.py).

The server is started with the command the cluster files run on the head, read from
cluster.yaml, with this venv's Python and this checkout's script, on 127.0.0.1 and a free port
instead of the head's address and 5000, and with HOME in a temporary folder: the server's state
(~/.jingle/mlflow) and the client's credentials (~/.mlflow/credentials) land there. The script
starts the server in a session (process group) of its own; the tests stop it with the script,
and if anything is left, signal that group alone.
"""

from __future__ import annotations

import base64
import os
import shlex
import signal
import socket
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "mlflow_server.py"


def cluster_start_command(name: str = "cluster.yaml") -> list[str]:
    """The head's MLflow start command in a cluster file, as words."""
    commands = yaml.safe_load((REPO / name).read_text())["head_start_ray_commands"]
    [command] = [command for command in commands if "mlflow_server.py" in command]
    return shlex.split(command)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerHome:
    """A HOME for the script, and the cluster's command run in it on 127.0.0.1:port."""

    def __init__(self, home: Path, port: int) -> None:
        self.home, self.port = home, port
        self.url = f"http://127.0.0.1:{port}"
        self.state = home / ".jingle" / "mlflow"
        self.credentials = home / ".mlflow" / "credentials"

    def command(self, action: str) -> list[str]:
        words = cluster_start_command()
        # what runs on the head: ~/venv/bin/python ~/jingle/deploy/mlflow_server.py start --host ... --port ...
        assert words[:3] == ["~/venv/bin/python", "~/jingle/deploy/mlflow_server.py", "start"], words
        if action == "stop":
            return [sys.executable, str(SCRIPT), "stop"]
        options = words[3:]
        options[options.index("--host") + 1] = "127.0.0.1"
        options[options.index("--port") + 1] = str(self.port)
        return [sys.executable, str(SCRIPT), "start", *options]

    def run(self, action: str, timeout: float = 240) -> subprocess.CompletedProcess:
        environment = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
        return subprocess.run(self.command(action), env={**environment, "HOME": str(self.home)}, cwd=self.home,
                              capture_output=True, text=True, timeout=timeout)

    def pid(self) -> int | None:
        try:
            return int((self.state / "server.pid").read_text())
        except (OSError, ValueError):
            return None

    def password(self) -> str:
        return next(line.split("=", 1)[1].strip() for line in self.credentials.read_text().splitlines()
                    if line.startswith("mlflow_tracking_password"))

    def kill_leftovers(self) -> None:
        """SIGKILL the server's process group (its own session), if anything of it is left."""
        pid = self.pid()
        if pid is not None and group_alive(pid):
            os.killpg(pid, signal.SIGKILL)


def group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def status(url: str, *, method: str = "GET", credentials: tuple[str, str] | None = None, body: bytes | None = None) -> int:
    request = urllib.request.Request(url, method=method, data=body, headers={"Content-Type": "application/json"})
    if credentials:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(credentials).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The server, started as the cluster file starts it; stopped (its group only) when the module ends."""
    started = ServerHome(tmp_path_factory.mktemp("mlflow-home"), free_port())
    try:
        result = started.run("start")
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"tracking server on {started.url}" in result.stdout
        yield started
    finally:
        started.run("stop", timeout=60)
        started.kill_leftovers()


def test_the_tracking_server_refuses_anonymous_requests_and_admits_the_cluster_credentials(server, monkeypatch):
    """Attack: anyone on the network reading, changing or deleting runs without logging in;
    leak: the generated password in a process's arguments, the server's log or a readable file."""
    search = f"{server.url}/api/2.0/mlflow/experiments/search?max_results=5"
    assert status(search) == 401
    assert status(f"{server.url}/api/2.0/mlflow/experiments/create", method="POST", body=b'{"name": "intruder"}') == 401
    assert status(search, credentials=("admin", "not-the-password-at-all")) == 401
    password = server.password()
    assert len(password) >= 32 and status(search, credentials=("admin", password)) == 200

    # A job's client: MLFLOW_TRACKING_USERNAME/PASSWORD unset, HOME holds ~/.mlflow/credentials (as on a node).
    from mlflow.tracking import MlflowClient

    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(server.home))
    client = MlflowClient(server.url)
    run = client.create_run(client.create_experiment("jingle-auth-test"))
    client.log_metric(run.info.run_id, "loss", 0.25, step=3)
    [metric] = client.get_metric_history(run.info.run_id, "loss")
    assert (metric.value, metric.step) == (0.25, 3)

    secret_key = (server.state / "flask_secret_key").read_text().strip()
    processes = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert server.url.rsplit(":", 1)[1] in processes  # the server's own command line is there...
    assert password not in processes and secret_key not in processes  # ...without its secrets
    log = (server.state / "server.log").read_text(errors="replace")
    assert "Created admin user 'admin'" in log and password not in log and secret_key not in log
    assert stat.S_IMODE(server.state.stat().st_mode) == 0o700
    for path in (server.credentials, server.state / "basic_auth.ini", server.state / "flask_secret_key",
                 server.state / "basic_auth.db", server.home / "mlflow.db", server.state / "server.log"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_a_restart_stops_only_its_own_server_and_keeps_the_password(server):
    """Fault: `ray up` rerun on the head (the start command runs again); the old server must go
    by its pid file, not by a `pkill` that would end other users' MLflow servers."""
    first_pid, password = server.pid(), server.password()
    again = server.run("start")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "stopped the previous server" in again.stdout
    assert server.pid() != first_pid and not group_alive(first_pid) and group_alive(server.pid())
    assert server.password() == password  # the workers' copies of the credentials stay valid
    assert status(f"{server.url}/api/2.0/mlflow/experiments/search?max_results=1", credentials=("admin", password)) == 200
    second_pid = server.pid()
    stopped = server.run("stop", timeout=60)
    assert stopped.returncode == 0 and stopped.stdout.strip() == "mlflow-server: stopped"
    assert server.pid() is None and not group_alive(second_pid)  # the pid file goes with the server
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", server.port)) != 0


def test_start_refuses_a_port_held_by_another_process_and_kills_nothing(tmp_path):
    """Fault: a server this script did not start (another user's, an older cluster file's) holds
    the port, and a stale pid file names an unrelated process: neither may be killed."""
    home = ServerHome(tmp_path, free_port())
    bystander = subprocess.Popen(["sleep", "120"], start_new_session=True)
    listener = socket.socket()
    try:
        listener.bind(("127.0.0.1", home.port))
        listener.listen()
        home.state.mkdir(parents=True)
        (home.state / "server.pid").write_text(f"{bystander.pid}\n")  # a reused pid: not an mlflow server
        result = home.run("start", timeout=60)
        assert result.returncode == 1, result.stdout + result.stderr
        assert result.stderr.startswith(f"mlflow-server: 127.0.0.1:{home.port} is in use by a process this script did not start")
        assert bystander.poll() is None and not (home.state / "server.pid").exists()
        assert not home.credentials.exists()  # nothing written for a server that did not start
    finally:
        listener.close()
        bystander.kill()
        bystander.wait()
