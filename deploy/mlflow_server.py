#!/usr/bin/env python3
"""Start or stop the cluster's MLflow tracking server, behind MLflow's basic-auth app.

The head's start command in ``cluster.yaml`` and ``cluster.local.yaml`` runs

    ~/venv/bin/python ~/jingle/deploy/mlflow_server.py start --host HEAD_PRIVATE_ADDRESS --port 5000

and ``tests/reliability/test_mlflow_auth.py`` runs the same command on 127.0.0.1.

What ``start`` does, every time (a rerun of ``ray up`` restarts the server):

- stops the server this script started before, found by its pid file (never by name: other
  users' MLflow servers on the machine are left alone);
- on the first start only, generates the admin password and a Flask secret key on this
  machine (``secrets.token_urlsafe``) and writes them, with MLflow's auth settings, to files
  of mode 0600 under ``~/.jingle/mlflow`` (mode 0700). The password is never an argument of
  a process and never printed: the server gets ``MLFLOW_AUTH_CONFIG_PATH`` (the path of
  ``basic_auth.ini``) and ``MLFLOW_FLASK_SERVER_SECRET_KEY`` in its environment;
- writes the client credentials to ``~/.mlflow/credentials`` (0600), the file MLflow's client
  reads when ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` are not set, so every
  process of this account on the head (Ray jobs, ``ray submit`` drivers) logs in without the
  secret in any command line or environment. The cluster files' ``cluster_synced_files`` copy
  that file from the head to every worker node (rsync keeps its mode);
- starts ``mlflow server --app-name basic-auth`` in a session of its own (its uvicorn workers
  share its process group, which ``stop`` signals), waits until it answers, and checks that
  a request without credentials is refused.

Files under ``~/.jingle/mlflow``: ``basic_auth.ini`` (auth settings and the admin password),
``basic_auth.db`` (MLflow's users and permissions), ``flask_secret_key``, ``server.pid``,
``server.log``. The tracking store stays where the cluster files always kept it,
``~/mlflow.db`` (made 0600: whoever reads the SQLite file reads every run, password or not).
Rotating the admin password: remove ``basic_auth.ini`` and ``basic_auth.db`` (users and
permissions are lost, runs are kept) and start again; then ``ray up`` again, which copies the
new ``~/.mlflow/credentials`` to the workers.

Exit status: 0 done; 1 the server did not start (the last lines of its log say why) or a
server this script did not start holds the port; 2 bad usage.
"""

from __future__ import annotations

import argparse
import base64
import configparser
import io
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ADMIN_USERNAME = "admin"
START_TIMEOUT_SECONDS = 180.0
STOP_TIMEOUT_SECONDS = 20.0


class Failure(Exception):
    """Something the operator must see in one line (exit 1)."""


class Paths:
    """Where the server's state lives, under the home folder of the account that runs it."""

    def __init__(self, home: Path) -> None:
        self.state = home / ".jingle" / "mlflow"
        self.auth_config = self.state / "basic_auth.ini"
        self.auth_database = self.state / "basic_auth.db"
        self.secret_key = self.state / "flask_secret_key"
        self.pid = self.state / "server.pid"
        self.log = self.state / "server.log"
        self.store = home / "mlflow.db"
        self.client_credentials = home / ".mlflow" / "credentials"


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (created 0600, never world-readable in between)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)


def admin_password(paths: Paths) -> str:
    """The admin password: read from ``basic_auth.ini``, or generated on the first start."""
    if paths.auth_config.exists():
        config = configparser.ConfigParser(interpolation=None)
        config.read(paths.auth_config)
        password = config.get("mlflow", "admin_password", fallback="")
        if not password:
            raise Failure(f"{paths.auth_config} has no admin_password: remove it and {paths.auth_database.name} to start afresh")
        os.chmod(paths.auth_config, 0o600)
        return password
    if paths.auth_database.exists():
        # MLflow reads admin_password only to create the admin user: a new password would not
        # open the existing user store, and jobs would be refused.
        raise Failure(f"{paths.auth_database} exists without {paths.auth_config.name}: the admin password is lost; "
                      f"remove {paths.auth_database} to start with a new one (runs are kept)")
    password = secrets.token_urlsafe(32)  # [A-Za-z0-9_-]: nothing configparser would interpolate
    config = configparser.ConfigParser(interpolation=None)
    config["mlflow"] = {
        # a user the admin adds later may read every experiment; writing needs a grant
        "default_permission": "READ",
        "database_uri": f"sqlite:///{paths.auth_database}",
        "admin_username": ADMIN_USERNAME,
        "admin_password": password,
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
    }
    text = io.StringIO()
    config.write(text)
    write_private(paths.auth_config, text.getvalue())
    return password


def flask_secret_key(paths: Paths) -> str:
    if not paths.secret_key.exists():
        write_private(paths.secret_key, secrets.token_urlsafe(32) + "\n")
    os.chmod(paths.secret_key, 0o600)
    return paths.secret_key.read_text().strip()


def write_client_credentials(paths: Paths, password: str) -> None:
    """MLflow's client credentials file: ``[mlflow]`` with the tracking username and password."""
    paths.client_credentials.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_private(paths.client_credentials,
                  f"[mlflow]\nmlflow_tracking_username = {ADMIN_USERNAME}\nmlflow_tracking_password = {password}\n")


def read_pid(paths: Paths) -> int | None:
    try:
        return int(paths.pid.read_text().strip())
    except (OSError, ValueError):
        return None


def is_our_server(pid: int) -> bool:
    """Whether ``pid`` still is the server this script started (not a process that got its pid)."""
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        return os.getpgid(pid) == pid and b"mlflow" in arguments and b"server" in arguments
    except (OSError, ProcessLookupError):
        return False


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user took the group id: not ours
        return False


def stop(paths: Paths) -> bool:
    """Stop the server this script started (its whole process group); True if one ran."""
    pid = read_pid(paths)
    if pid is None:
        return False
    if not is_our_server(pid):
        paths.pid.unlink(missing_ok=True)  # stale: the server is gone, its pid may be someone else's
        return False
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if group_alive(pid):
        os.killpg(pid, signal.SIGKILL)
        while group_alive(pid) and time.monotonic() < deadline + 5:
            time.sleep(0.1)
    paths.pid.unlink(missing_ok=True)
    return True


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex((host, port)) == 0


def http_status(url: str, password: str | None = None) -> int | None:
    """The HTTP status of a GET (None: nothing answers yet)."""
    request = urllib.request.Request(url)
    if password is not None:
        token = base64.b64encode(f"{ADMIN_USERNAME}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        # generous: checking a password is a deliberately slow hash, on a head that may be busy
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError):
        return None


def log_tail(paths: Paths, lines: int = 15) -> str:
    try:
        return "\n".join(paths.log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start(paths: Paths, host: str, port: int, workers: int) -> str:
    """Start the server (restarting the one this script started before); returns its URL."""
    os.umask(0o077)  # everything written from here on (logs, SQLite files) is the owner's only
    paths.state.mkdir(parents=True, exist_ok=True)
    os.chmod(paths.state, 0o700)
    if stop(paths):
        print("mlflow-server: stopped the previous server")
    if port_in_use(host, port):
        raise Failure(f"{host}:{port} is in use by a process this script did not start "
                      f"(an MLflow server started by hand or by an older cluster file?): stop it, then start again")
    password = admin_password(paths)
    environment = {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str(paths.auth_config),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": flask_secret_key(paths),
        # MLflow's server-side jobs (GenAI evaluation) are not used here; they would start a
        # handful of extra Python processes on the head.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    # Settings that would override the file's admin (or log in as someone else) must not leak in.
    for name in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_TRACKING_USERNAME",
                 "MLFLOW_TRACKING_PASSWORD"):
        environment.pop(name, None)
    if paths.store.exists():
        os.chmod(paths.store, 0o600)
    command = [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
               "--backend-store-uri", f"sqlite:///{paths.store}", "--host", host, "--port", str(port),
               "--workers", str(workers)]
    with open(paths.log, "ab") as log, open(os.devnull, "rb") as nothing:
        server = subprocess.Popen(command, stdin=nothing, stdout=log, stderr=subprocess.STDOUT, env=environment,
                                  cwd=paths.state.parent.parent, start_new_session=True, close_fds=True)
    paths.pid.write_text(f"{server.pid}\n")
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while http_status(f"{url}/health") != 200:
        if server.poll() is not None:
            paths.pid.unlink(missing_ok=True)
            raise Failure(f"the MLflow server exited with status {server.returncode}; the end of {paths.log}:\n{log_tail(paths)}")
        if time.monotonic() > deadline:
            stop(paths)
            raise Failure(f"the MLflow server did not answer on {url} within {START_TIMEOUT_SECONDS:.0f} s; "
                          f"the end of {paths.log}:\n{log_tail(paths)}")
        time.sleep(0.5)
    probe = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    if http_status(probe) != 401 or http_status(probe, password) != 200:
        stop(paths)
        raise Failure(f"the MLflow server on {url} does not enforce its basic-auth login; stopped it")
    write_client_credentials(paths, password)
    return url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlflow_server.py", description=__doc__.strip().splitlines()[0])
    actions = parser.add_subparsers(dest="action", required=True)
    starting = actions.add_parser("start", help="start the server (restarts the one this script started)")
    starting.add_argument("--host", required=True, help="the address to listen on: the head's private address")
    starting.add_argument("--port", type=int, default=5000)
    # One process writes the SQLite store (several writers can fail with "database is locked").
    starting.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1: one SQLite writer)")
    actions.add_parser("stop", help="stop the server this script started")
    args = parser.parse_args(argv)
    paths = Paths(Path.home())
    try:
        if args.action == "stop":
            print("mlflow-server: stopped" if stop(paths) else "mlflow-server: no server of this script runs")
            return 0
        url = start(paths, args.host, args.port, args.workers)
    except Failure as failure:
        print(f"mlflow-server: {failure}", file=sys.stderr)
        return 1
    # The URL and where the credentials are; never the password.
    print(f"mlflow-server: tracking server on {url} (basic auth; user {ADMIN_USERNAME}, password in "
          f"{paths.client_credentials}; log {paths.log})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
