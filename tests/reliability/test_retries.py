"""``training.max_failures`` restarts the workers after a crash, never after an error that
would happen again.

- a worker's error is marked as one a restart would meet again (bad data, a bad config
  value, a bug) or left for a restart (a broken collective, I/O, a dead worker); a shard
  that fails its manifest's sha256 is named;
- the driver's restarts: a crash is retried up to ``max_failures``, a marked error never,
  and a dead worker wins over its peers' collateral errors;
- end to end on the session's Ray: a shard corrupted at the same size (which the driver's
  size check lets through) ends ``jingle train`` in one line, exit 2, after one start of
  the workers (a worker killed mid-run, started again once, is
  tests/test_train_fusion.py::test_a_worker_killed_mid_run_costs_only_the_work_since_the_checkpoint).
"""

from __future__ import annotations

import json
import pickle
import traceback
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pytest
from ray.exceptions import ActorDiedError, RayTaskError
from ray.train import WorkerGroupError

from jingle.core.config import ConfigError
from jingle.pipelines import train_fusion
from jingle.pipelines.common import DeterministicError, DeterministicInputError
from jingle.pipelines.train import fit_with_restarts
from jingle.pipelines.worker import deterministic_error
from tests.conftest import copy_tree, write_training_config
from tests.test_fusion_training import TINY_MODEL

CONFIG = {
    "model": TINY_MODEL,
    "masking": {"strategy": "temporal", "temporal_segment": 20, "fade_frames": 4},
    "validation": {"score_segments": 0, "score_shortcuts": False},  # no decoding: the runs stay short
    "training": {"epochs": 1, "batch_size": 2, "learning_rate": 0.003, "warmup_steps": 0, "schedule": "constant",
                 "validation_fraction": 0.2, "num_to_keep": 2, "max_failures": 2},
}


@pytest.fixture(scope="module")
def shards(fusion_train_shards) -> Path:
    return fusion_train_shards


def corrupt_copy(shards: Path, folder: Path) -> tuple[Path, str]:
    """A copy of ``shards`` whose first shard has a stretch of its pages zeroed, its size kept
    (so the driver's check passes and only the sha256 sees it); that shard's name."""
    copy = copy_tree(shards, folder / "shards")
    manifest = json.loads((copy / "manifest.json").read_text())
    name = sorted(manifest["files"])[0]
    path = copy / manifest["shard_dir"] / name
    data = bytearray(path.read_bytes())
    data[4:len(data) // 2] = bytes(len(data) // 2 - 4)
    path.write_bytes(bytes(data))
    return copy, f"{manifest['shard_dir']}/{name}"


def write_config(folder: Path, **training) -> Path:
    return write_training_config(folder, CONFIG, **training)


def worker_starts(run_dir: Path) -> list[int]:
    return [json.loads(path.read_text())["starts"] for path in sorted((run_dir / "workers").glob("rank-*.json"))]


# ------------------------------------------------------------- in the worker: marking


def test_errors_a_restart_would_meet_again_are_marked_and_a_damaged_shard_is_named(shards, tmp_path):
    plan = SimpleNamespace(task="fusion", data=SimpleNamespace(root=str(shards), validation_root=""))
    config = deterministic_error(ConfigError("masking.temporal_segment must be ≥ 1, got 0"), plan)
    assert type(config) is DeterministicInputError and str(config) == "masking.temporal_segment must be ≥ 1, got 0"
    value = deterministic_error(ValueError("expected 128 channels,\n got 64"), plan)
    assert type(value) is DeterministicInputError and str(value) == "ValueError: expected 128 channels, got 64"
    bug = deterministic_error(TypeError("unsupported operand"), plan)
    assert type(bug) is DeterministicError and str(bug) == "TypeError: unsupported operand"
    # a Ray task's error (Ray Data's read, for one) is judged by its cause, and says the cause
    try:
        raise pa.ArrowInvalid("Could not open Parquet input source 'x.parquet': Parquet magic bytes not found")
    except pa.ArrowInvalid as cause:
        task = RayTaskError("ReadParquet", traceback.format_exc(), cause).as_instanceof_cause()
    assert str(deterministic_error(task, plan)).startswith("ArrowInvalid: Could not open Parquet input source 'x.parquet'")
    # left for a restart: a broken collective; I/O while every shard is intact
    assert deterministic_error(RuntimeError("Connection closed by peer"), plan) is None
    assert deterministic_error(OSError("Couldn't deserialize thrift"), plan) is None

    copy, damaged = corrupt_copy(shards, tmp_path)
    marked = deterministic_error(OSError("Couldn't deserialize thrift"), SimpleNamespace(task="fusion", data=SimpleNamespace(root=str(copy), validation_root="")))
    assert type(marked) is DeterministicInputError
    assert str(marked).startswith(f"--data {copy}: shard {damaged} does not match the manifest's sha256 (corrupt); rerun jingle preprocess fusion")
    again = pickle.loads(pickle.dumps(marked))  # as Ray brings it to the driver
    assert type(again) is DeterministicInputError and str(again) == str(marked)


# ------------------------------------------------------------- in the driver: restarts


class Attempts:
    """A stand-in for ``TorchTrainer.fit``: raises the given worker failures, then succeeds."""

    def __init__(self, *failures: dict[int, BaseException]) -> None:
        self.failures, self.calls = list(failures), 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise WorkerGroupError("worker errors", self.failures.pop(0))
        return "result"


def test_a_crash_is_restarted_up_to_max_failures_and_a_deterministic_error_never():
    said: list[str] = []
    crash = {0: RuntimeError("Connection closed by peer"), 1: ActorDiedError()}
    fit = Attempts(crash, crash)
    assert fit_with_restarts(fit, max_failures=2, say=said.append) == "result" and fit.calls == 3
    assert said == ["training: worker 1: ActorDiedError: The actor died unexpectedly before finishing this task.; "
                    f"restarting from the latest checkpoint (restart {n} of 2)" for n in (1, 2)]

    fit = Attempts(crash, crash, crash)
    with pytest.raises(RuntimeError, match=r"failed 3 time\(s\), more than training.max_failures \(2\) allows; last: worker 1: ActorDiedError"):
        fit_with_restarts(fit, max_failures=2, say=said.append)
    unlimited = Attempts(crash, crash, crash)
    assert fit_with_restarts(unlimited, max_failures=-1, say=said.append) == "result" and unlimited.calls == 4

    bad_shard = DeterministicInputError("--data d: shard shards/a.parquet does not match the manifest's sha256 (corrupt)")
    fit = Attempts({0: RuntimeError("Connection closed by peer"), 1: bad_shard})
    with pytest.raises(DeterministicInputError) as raised:
        fit_with_restarts(fit, max_failures=2, say=said.append)
    assert raised.value is bad_shard and fit.calls == 1
    # a dead worker wins: its peers' errors may be the collateral of its death
    fit = Attempts({0: bad_shard, 1: ActorDiedError()})
    assert fit_with_restarts(fit, max_failures=2, say=said.append) == "result" and fit.calls == 2


# ------------------------------------------------------------- end to end


@pytest.mark.ray
def test_a_shard_corrupted_mid_run_fails_once_in_one_line_with_exit_2(shards, tmp_path, capsys):
    copy, damaged = corrupt_copy(shards, tmp_path)
    code = train_fusion.main(["--data", str(copy), "--config", str(write_config(tmp_path)), "--storage", str(tmp_path / "runs"),
                              "--workers", "2", "--name", "corrupt"])
    captured = capsys.readouterr()
    error = captured.err.strip().splitlines()
    assert code == 2 and len(error) == 1, captured.err[-3000:]
    assert error[0].startswith(f"jingle train fusion: error: --data {copy}: shard {damaged} does not match the manifest's sha256")
    assert worker_starts(tmp_path / "runs" / "corrupt") == [1, 1]  # never restarted
