"""MLflow for trainings: the run of a training (reopened on resume) and logging to it.

The store is ``MLFLOW_TRACKING_URI`` when set; else a SQLite file under a local
``--storage``, or, for a bucket (``s3://``, ``gs://``: SQLite cannot live there), the
SQLite file ``~/.jingle/mlflow.db`` of the machine that runs the command (on a cluster:
the head). Artifacts go under the storage either way (``STORAGE/mlflow-artifacts``). Only
rank 0 logs, so one process writes; on a cluster whose training workers run on other
nodes, point ``MLFLOW_TRACKING_URI`` at a tracking server (``cluster.yaml`` starts one).

A training's run ends from the driver once ``trainer.fit()`` returns or raises
(``ending_tracking_run``): FINISHED, FAILED (an exception) or KILLED (Ctrl-C, SIGTERM). A
resumed training reopens its run as RUNNING.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from jingle.core.storage import Location

MLFLOW_DB = "mlflow.db"
MLFLOW_ARTIFACTS = "mlflow-artifacts"


def tracking_uri(storage: "str | Location") -> str:
    """``MLFLOW_TRACKING_URI`` when set, else a SQLite store under a local storage folder
    (for a bucket: ``~/.jingle/mlflow.db``)."""
    location = Location.of(storage)
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if location.is_local:
        return f"sqlite:///{Path(location.uri) / MLFLOW_DB}"
    home = Path(os.environ.get("JINGLE_HOME", Path.home() / ".jingle"))
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / MLFLOW_DB}"


def artifact_location(storage: "str | Location") -> str:
    """Where a new experiment's artifacts go: under the storage (a file URI or the bucket's)."""
    location = Location.of(storage) / MLFLOW_ARTIFACTS
    return Path(location.uri).as_uri() if location.is_local else location.uri


@dataclass(frozen=True)
class TrackingRun:
    """Where a training logs: the store and the run in it."""

    uri: str
    run_id: str


def open_tracking_run(*, storage: "str | Location", experiment: str, run_name: str, params: dict[str, Any]) -> TrackingRun:
    """The MLflow run of this training (created once; a resumed run gets the same one)."""
    from mlflow.tracking import MlflowClient

    # A new SQLite store announces its table migrations at INFO, on the user's terminal.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    uri = tracking_uri(storage)
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        experiment_id = client.create_experiment(experiment, artifact_location=artifact_location(storage))
    else:
        experiment_id = found.experiment_id
    runs = client.search_runs([experiment_id], filter_string=f"tags.`jingle.run` = '{run_name}'", max_results=1)
    if runs:
        if runs[0].info.status != "RUNNING":  # a resumed training runs again (its old end time stays until it ends)
            client.update_run(runs[0].info.run_id, status="RUNNING")
        return TrackingRun(uri, runs[0].info.run_id)
    run = client.create_run(experiment_id, run_name=run_name, tags={"jingle.run": run_name})
    client.log_batch(run.info.run_id, params=[_param(key, value) for key, value in _flatten(params).items()])
    return TrackingRun(uri, run.info.run_id)


# How a training ended, in MLflow's words (mlflow.entities.RunStatus).
FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"
_log = logging.getLogger(__name__)


def end_tracking_run(tracking: TrackingRun, status: str) -> None:
    """End the run with ``status`` (FINISHED, FAILED or KILLED) and the current time as its end."""
    from mlflow.tracking import MlflowClient

    if status not in (FINISHED, FAILED, KILLED):
        raise ValueError(f"status must be one of {FINISHED}, {FAILED}, {KILLED}: got {status!r}")
    MlflowClient(tracking.uri).set_terminated(tracking.run_id, status=status)


@contextlib.contextmanager
def ending_tracking_run(tracking: TrackingRun) -> Iterator[TrackingRun]:
    """Around ``trainer.fit()`` in the driver: the run ends FINISHED when the block does,
    FAILED when it raises an exception, KILLED on Ctrl-C or SIGTERM; what was raised goes on.

    SIGTERM's default action ends the process without unwinding, which would leave the run
    RUNNING forever. While the block runs (main thread only), SIGTERM goes to the handler that
    was there before (Ray's driver handler raises ``SystemExit`` after its own clean-up) or,
    where that was the default action, raises ``SystemExit(143)``, the status a shell reports
    for a process ended by SIGTERM.
    """
    installed, previous = False, None
    if threading.current_thread() is threading.main_thread():
        previous = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum, frame):
            if callable(previous):
                previous(signum, frame)
            raise SystemExit(128 + signum)

        if previous is not signal.SIG_IGN:
            signal.signal(signal.SIGTERM, on_sigterm)
            installed = True
    status = FAILED
    try:
        yield tracking
        status = FINISHED
    except (KeyboardInterrupt, SystemExit):
        status = KILLED
        raise
    finally:
        if installed:  # None: a handler not set from Python; the default is the nearest we can restore
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        try:
            end_tracking_run(tracking, status)
        except Exception as error:  # the training's own outcome matters more than its record
            _log.warning("could not end MLflow run %s as %s: %s", tracking.run_id, status, error)


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
    """Logging to one MLflow run (from rank 0: other ranks get none)."""

    def __init__(self, run: TrackingRun) -> None:
        from mlflow.tracking import MlflowClient

        self.run_id = run.run_id
        self.client = MlflowClient(run.uri)

    def metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, step) for key, value in values.items() if isinstance(value, (int, float))]
        for start in range(0, len(batch), 900):  # MLflow caps a batch at 1000 metrics
            self.client.log_batch(self.run_id, metrics=batch[start : start + 900])

    def artifact(self, path: str | os.PathLike, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path=folder)
