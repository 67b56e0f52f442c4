"""Bad input and a full disk end in one line, never in an internal error or a traceback.

- a read-only ``--out`` (preprocess fusion and pointer) or ``--storage`` (train) is refused
  before any work, exit 2, naming the folder;
- a training seed outside [0, 2**32 - 1] is refused when the config is read, exit 2;
- a write that finds the disk full leaves no temporary file and ends the command with exit 1
  and ``PATH: No space left on device``, also when it happened in a Ray task.
(The count of new rejects is asserted in tests/test_preprocess_fusion.py.)
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
from ray.exceptions import RayTaskError, UserCodeException

from jingle.core.config import ConfigError, TrainingConfig
from jingle.core.storage import Location
from jingle.pipelines import preprocess_fusion, train_fusion, train_pointer
from jingle.pipelines.common import disk_full, run_main
from jingle.pipelines.tasks import get_task

REPO = Path(__file__).resolve().parents[2]
NO_SPACE = os.strerror(errno.ENOSPC)  # "No space left on device"

# ``jingle`` commands in one process: [{"code", "stderr"}] per command, as JSON on stdout.
JINGLE = r"""
import contextlib, io, json, sys
from jingle.pipelines.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            code = main(argv)
        except SystemExit as exit:
            code = exit.code
    results.append({"code": code, "stderr": stderr.getvalue()})
print(json.dumps(results))
"""
# Run a command with the folder "$0" mounted read-only, in a mount namespace of its own
# (gone with the command; exit 97 when this machine allows no such mount).
READ_ONLY_MOUNT = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" || exit 97; exec "$@"'


def jingle_with_read_only(folder: Path, commands: list[list[str]]) -> tuple[list[dict], str]:
    """Run ``commands`` while ``folder`` cannot be written; their results, and the reason the
    refusal should give. Not root: ``chmod 555`` is enough. Root writes through permission
    bits (``os.access`` rightly says yes), so there the folder becomes a read-only mount for
    the child alone: the EROFS of the issue."""
    folder.chmod(0o555)
    try:
        if not os.access(folder, os.W_OK):
            wrapper, reason = [], "is not writable by this user"
        elif shutil.which("unshare"):
            wrapper = ["unshare", "--mount", "--propagation", "private", "sh", "-c", READ_ONLY_MOUNT, str(folder)]
            reason = "is on a read-only file system"
        else:
            pytest.skip("root, and no unshare to make a read-only mount")
        result = subprocess.run([*wrapper, sys.executable, "-c", JINGLE, json.dumps(commands)], cwd=REPO,
                                capture_output=True, text=True, timeout=180)
        if result.returncode == 97 or (wrapper and "unshare:" in result.stderr):
            pytest.skip(f"no read-only mount here: {result.stderr.strip()[-300:]}")
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout.strip().splitlines()[-1]), reason
    finally:
        folder.chmod(0o755)


def test_a_read_only_output_folder_is_refused_in_one_line(tmp_path):
    fusion_pairs, pointer_pairs, read_only = tmp_path / "fusion", tmp_path / "pointer", tmp_path / "read-only"
    # an output folder of an earlier run (shards/ in it): before the check, its lock file made
    # an "internal error: OSError: [Errno 30]"
    for folder in (fusion_pairs / "input", fusion_pairs / "target", pointer_pairs / "raw", pointer_pairs / "edit", read_only / "shards"):
        folder.mkdir(parents=True)
    (tmp_path / "config.json").write_text("{}")
    ro = Location.of(read_only).uri
    results, reason = jingle_with_read_only(read_only, [
        ["preprocess", "fusion", "--pairs", str(fusion_pairs), "--out", ro, "--quiet"],
        ["preprocess", "fusion", "--pairs", str(fusion_pairs), "--out", f"{ro}/new/shards", "--quiet"],
        ["preprocess", "pointer", "--pairs", str(pointer_pairs), "--out", ro, "--quiet"],
        ["train", "fusion", "--data", str(tmp_path / "shards"), "--config", str(tmp_path / "config.json"), "--storage", f"{ro}/runs"],
    ])
    advice = "(give a folder this user can write)"
    assert results == [
        {"code": 2, "stderr": f"jingle preprocess fusion: error: --out {ro}: {reason} {advice}\n"},
        {"code": 2, "stderr": f"jingle preprocess fusion: error: --out {ro}/new/shards: cannot be created: {ro} {reason} {advice}\n"},
        {"code": 2, "stderr": f"jingle preprocess pointer: error: --out {ro}: {reason} {advice}\n"},
        {"code": 2, "stderr": f"jingle train fusion: error: --storage {ro}/runs: cannot be created: {ro} {reason} {advice}\n"},
    ]
    assert [path.name for path in read_only.rglob("*")] == ["shards"]  # nothing written


def test_a_seed_outside_32_bits_is_refused_when_the_config_is_read(tmp_path, capsys):
    assert TrainingConfig(seed=0).seed == 0 and TrainingConfig(seed=2**32 - 1).seed == 2**32 - 1
    with pytest.raises(ConfigError) as too_large:
        TrainingConfig(seed=2**32)
    assert str(too_large.value) == "seed must be ≤ 4294967295, got 4294967296"
    with pytest.raises(ConfigError) as negative:
        TrainingConfig(seed=-1)
    assert str(negative.value) == "seed must be ≥ 0, got -1"
    config = tmp_path / "config.json"
    config.write_text("{}")
    with pytest.raises(ConfigError) as overridden:
        get_task("fusion").config_class.from_file(config).with_overrides({"training.seed": 99999999999999999999999})
    message = "seed must be ≤ 4294967295, got 99999999999999999999999"
    assert str(overridden.value).endswith(message)
    # the CLI's --override path: one line, exit 2, before any data is read or Ray starts
    for command in (train_fusion, train_pointer):
        code = command.main(["--data", str(tmp_path / "no-shards"), "--config", str(config),
                             "--override", "training.seed=99999999999999999999999"])
        lines = capsys.readouterr().err.splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].endswith(message), lines


def no_space(*_):
    raise OSError(errno.ENOSPC, NO_SPACE)  # as write() and fsync() raise it: no file name


def test_a_failed_write_leaves_no_temporary_file_and_names_the_file(tmp_path, monkeypatch):
    manifest = Location.of(tmp_path / "out" / "manifest.json")
    manifest.write_text("old")
    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError) as error:
        manifest.write_text("new")
    assert (error.value.errno, error.value.filename) == (errno.ENOSPC, manifest.uri)
    assert disk_full(error.value) == f"{manifest.uri}: {NO_SPACE}"

    def interrupted(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        manifest.write_text("newer")
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["manifest.json"]
    assert Path(manifest.uri).read_text() == "old"


def test_a_full_disk_at_the_manifest_ends_preprocessing_with_one_line(tmp_path, monkeypatch, capsys):
    pairs, out = tmp_path / "pairs", tmp_path / "out"
    (pairs / "input").mkdir(parents=True)
    (pairs / "target").mkdir()
    monkeypatch.setattr(os, "fsync", no_space)  # no pairs: the manifest is the first file synced
    code = preprocess_fusion.main(["--pairs", str(pairs), "--out", str(out), "--quiet"])
    manifest = Location.of(out / "manifest.json").uri
    assert (code, capsys.readouterr().err) == (1, f"jingle preprocess fusion: error: {manifest}: {NO_SPACE} (free some space, then rerun)\n")
    assert [path.name for path in out.rglob(".tmp-*")] == [] and not Path(manifest).exists()


def ray_task_errors(path: str) -> dict[str, RayTaskError]:
    """A full disk in a Ray task as the driver receives it (checked against Ray 2.60: a task's
    ``ray.get`` and a Ray Data ``map_batches``, 2026-12): a ``RayTaskError(OSError)`` whose
    ``cause`` is the OSError; and Ray Data's ``RayTaskError(UserCodeException)``, whose
    cause lost its own cause in transit (pickled), the OSError left only in the traceback text."""

    def write():
        raise OSError(errno.ENOSPC, NO_SPACE, path)

    try:
        write()
    except OSError as error:
        task = RayTaskError("write_shard", traceback.format_exc(), error, proctitle="ray::write_shard", pid=4321, ip="127.0.0.1")
    try:
        try:
            write()
        except OSError as error:
            raise UserCodeException("UDF failed to process a data block.") from error
    except UserCodeException as error:
        received = pickle.loads(pickle.dumps(error))
        assert received.__cause__ is None
        data = RayTaskError("MapBatches(write_fusion_shard)", traceback.format_exc(), received,
                            proctitle="ray::MapBatches(write_fusion_shard)", pid=4321, ip="127.0.0.1")
    return {"task": task.as_instanceof_cause(), "data": data.as_instanceof_cause()}


@pytest.mark.parametrize("kind", ["task", "data"])
def test_a_full_disk_in_a_ray_task_ends_the_command_with_one_line(kind, tmp_path, capsys):
    shard = str(tmp_path / "out" / "shards" / "part-0123.parquet")
    error = ray_task_errors(shard)[kind]
    assert "\x1b[" in str(error)  # what the internal-error line used to show
    assert disk_full(error) == f"{shard}: {NO_SPACE}"

    def command(_args):
        raise error

    code = run_main(command, preprocess_fusion.build_parser().parse_args(["--pairs", "p", "--out", "o"]), "jingle preprocess fusion")
    assert (code, capsys.readouterr().err) == (1, f"jingle preprocess fusion: error: {shard}: {NO_SPACE} (free some space, then rerun)\n")


def test_other_errors_are_not_taken_for_a_full_disk():
    assert disk_full(OSError(errno.EACCES, os.strerror(errno.EACCES), "/x")) is None
    assert disk_full(RuntimeError("training failed: worker 1 died")) is None
