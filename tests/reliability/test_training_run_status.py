"""A training's MLflow run ends with how the training ended (``pipelines.tracking``).

``jingle train`` opens (or reopens) its run before ``fit()`` and ends it from the driver
(``ending_tracking_run`` in ``pipelines.train.run``): FINISHED, FAILED on an exception, KILLED on
Ctrl-C or SIGTERM, each with an end time; a resumed run is RUNNING again while it trains. Here
on a SQLite store in ``tmp_path``, without Ray (the real trainings' FINISHED is asserted in
tests/test_train_fusion.py).
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from mlflow.tracking import MlflowClient

from jingle.pipelines.tracking import ending_tracking_run, open_tracking_run


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the store under the storage folder
    return tmp_path / "runs"


def open_run(storage, name: str):
    return open_tracking_run(storage=storage, experiment="jingle-test", run_name=name, params={"training": {"seed": 0}})


def info(tracking):
    return MlflowClient(tracking.uri).get_run(tracking.run_id).info


def now_ms() -> int:
    return int(time.time() * 1000)


def test_a_run_ends_finished_failed_or_killed_with_an_end_time(store):
    finished, failed, interrupted = (open_run(store, name) for name in ("done", "broken", "interrupted"))
    started = now_ms()
    with ending_tracking_run(finished):
        assert (info(finished).status, info(finished).end_time) == ("RUNNING", None)
    with pytest.raises(RuntimeError, match="worker died"), ending_tracking_run(failed):
        raise RuntimeError("worker died")
    with pytest.raises(KeyboardInterrupt), ending_tracking_run(interrupted):
        raise KeyboardInterrupt
    ended = now_ms()
    for tracking, status in ((finished, "FINISHED"), (failed, "FAILED"), (interrupted, "KILLED")):
        run = info(tracking)
        assert run.status == status, tracking
        assert started <= run.end_time <= ended


def ray_like_handler(calls: list):
    """What Ray's driver installs for SIGTERM: its clean-up, then ``sys.exit(signum)``."""

    def handler(signum, frame):
        calls.append(signum)
        raise SystemExit(signum)

    return handler


@pytest.mark.parametrize("earlier", ["default", "ray"])
def test_sigterm_during_the_training_ends_the_run_killed(store, earlier):
    tracking = open_run(store, f"terminated-{earlier}")
    calls = []
    handler = signal.SIG_DFL if earlier == "default" else ray_like_handler(calls)
    original = signal.signal(signal.SIGTERM, handler)
    try:
        with pytest.raises(SystemExit) as exit_info, ending_tracking_run(tracking):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)  # the handler raises here at the latest
        assert signal.getsignal(signal.SIGTERM) == handler  # the earlier handler is back
    finally:
        signal.signal(signal.SIGTERM, original)
    # the default action would end the process: 143, as a shell reports it; Ray's handler exits 15
    assert (exit_info.value.code, calls) == ((143, []) if earlier == "default" else (15, [15]))
    assert info(tracking).status == "KILLED" and info(tracking).end_time is not None


def test_a_resumed_run_runs_again_and_ends_again(store):
    first = open_run(store, "resumed")
    with ending_tracking_run(first):
        pass
    first_end = info(first).end_time
    time.sleep(0.01)
    reopened_at = now_ms()
    again = open_run(store, "resumed")  # same storage and name: the same run
    assert again.run_id == first.run_id and info(again).status == "RUNNING"
    with pytest.raises(ValueError), ending_tracking_run(again):
        raise ValueError("bad batch")
    run = info(again)
    assert run.status == "FAILED" and run.end_time >= reopened_at > first_end
