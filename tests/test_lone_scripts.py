"""Every runnable file in pipelines/ works as the lone copy that ``ray submit`` runs.

``ray submit cluster.yaml pipelines/X.py -- ARGS`` copies that one file to the head's home
folder and runs ``python ~/X.py ARGS`` there: the file's neighbours are not there, and every
import must come from the project installed on the node. Here each file is copied alone into
a temporary folder and run from another one, so neither the repository nor its working
directory can help it.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import os
import runpy
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePath

import pytest

ROOT = Path(__file__).resolve().parent.parent
PIPELINES = ROOT / "pipelines"
COLUMNS = "1000"  # one-line usage, the same in the subprocesses and here
MUST_RUN = {"preprocess_fusion", "preprocess_pointer", "train_fusion", "train_pointer", "tune_fusion", "tune_pointer",
            "fuse", "conform", "edit", "evaluate_fusion"}
INPUT_SUFFIXES = {".json", ".yaml", ".yml"}  # defaults naming a file the command reads
KNOWN_PATH_FAILURES: dict[str, str] = {}  # name -> why its lone copy still needs the repository (xfail, strict)


def is_runnable(path: Path) -> bool:
    """A module-level ``if __name__ == "__main__":``."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
            names = {getattr(node.test.left, "id", None)} | {getattr(c, "value", None) for c in node.test.comparators}
            if {"__name__", "__main__"} <= names:
                return True
    return False


RUNNABLE = sorted(path.stem for path in PIPELINES.rglob("*.py") if is_runnable(path))


def test_the_runnable_files_are_found():
    assert RUNNABLE, "no file in pipelines/ has if __name__ == '__main__'"
    assert MUST_RUN <= set(RUNNABLE), f"missing: {sorted(MUST_RUN - set(RUNNABLE))}"


@pytest.fixture(scope="module")
def lone(tmp_path_factory) -> Path:
    """FOLDER/copies/X.py for every runnable file (nothing else beside them), and FOLDER/cwd."""
    folder = tmp_path_factory.mktemp("lone")
    (folder / "copies").mkdir()
    (folder / "cwd").mkdir()
    for name in RUNNABLE:
        shutil.copy(PIPELINES / f"{name}.py", folder / "copies" / f"{name}.py")
    return folder


@pytest.fixture(scope="module")
def help_runs(lone) -> dict[str, subprocess.CompletedProcess]:
    """``python COPY --help`` of every copy, from the other folder, a few at a time."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(COLUMNS=COLUMNS, PYTHONDONTWRITEBYTECODE="1")

    def run(name: str) -> subprocess.CompletedProcess:
        command = [sys.executable, str(lone / "copies" / f"{name}.py"), "--help"]
        return subprocess.run(command, cwd=lone / "cwd", env=env, capture_output=True, text=True, timeout=240)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(RUNNABLE, pool.map(run, RUNNABLE)))


@pytest.mark.parametrize("name", RUNNABLE)
def test_lone_copy_prints_its_usage(name, help_runs, monkeypatch):
    result = help_runs[name]
    assert result.returncode == 0, f"{name}.py as a lone copy exited {result.returncode}:\n{result.stderr[-3000:]}"
    monkeypatch.setenv("COLUMNS", COLUMNS)
    # the installed module's own usage: the same command, flags and metavars
    usage = importlib.import_module(f"jingle.pipelines.{name}").build_parser().format_usage()
    assert usage in result.stdout, f"{name}.py: usage differs from the installed module's\n{result.stdout[:2000]}"


def file_defaults(parser: argparse.ArgumentParser, command: str = ""):
    """(command, flag, default) of every flag whose default names a file to read."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                yield from file_defaults(subparser, f"{command} {name}".strip())
        elif isinstance(action.default, (str, PurePath)) and PurePath(action.default).suffix in INPUT_SUFFIXES:
            yield command, "/".join(action.option_strings), action.default


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=KNOWN_PATH_FAILURES[name]))
    if name in KNOWN_PATH_FAILURES else name for name in RUNNABLE])
def test_lone_copy_needs_no_repository_path(name, lone, monkeypatch):
    """Module-level paths and file defaults of the lone copy exist outside the repository."""
    monkeypatch.chdir(lone / "cwd")
    monkeypatch.setattr(sys, "path", list(sys.path))  # its run-as-a-file line may add a folder
    copy = runpy.run_path(str(lone / "copies" / f"{name}.py"), run_name="lone_copy")
    missing = [f"{key} = {value}" for key, value in copy.items() if isinstance(value, PurePath) and not Path(value).exists()]
    missing += [f"{command} {flag} default {default}".strip() for command, flag, default in file_defaults(copy["build_parser"]())
                if not Path(default).exists()]
    assert not missing, f"{name}.py as a lone copy, run from {lone / 'cwd'}: missing " + "; ".join(missing)
