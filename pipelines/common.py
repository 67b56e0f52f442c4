"""What every pipeline entry point shares: argument parsing, Ray start-up, exit codes.

Exit codes (ARCHITECTURE.md): 0 success, 2 bad usage or bad input that stops the run,
1 an internal failure. Errors are one readable line; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import re
import socket
import sys
import tempfile
import traceback
from pathlib import Path
from dataclasses import dataclass
from typing import Callable

from jingle.datasets.audio import AudioError
from jingle.datasets.pairs import InputError
from jingle.training.checkpoints import CheckpointError
from jingle.models.codecs import CodecUnavailable
from jingle.core.config import ConfigError
from jingle.core.storage import StorageError, storage_environment
from jingle.datasets.shards import FolderBusy

# The installed project (configs/ sits beside pipelines/): found from the package, so a lone
# copy of a pipeline file (``ray submit``) or any working directory finds the same files.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class DeterministicError(Exception):
    """An error that running the same work again would meet again, found in a training
    worker: raised there in place of the original, as one line naming the cause, so that
    the driver ends the run at once. ``training.max_failures`` restarts the workers after a
    crash (a killed process, a lost node), never after this. This class is a bug's (exit 1);
    ``DeterministicInputError`` is bad data or a bad config value (exit 2)."""


class DeterministicInputError(DeterministicError):
    """Bad data or a bad config value met inside a training worker (one line, exit 2)."""


# Errors a user can cause and fix: one line, exit 2.
USER_ERRORS = (InputError, CodecUnavailable, CheckpointError, AudioError, ConfigError, StorageError, DeterministicInputError)
# Exit status of a run that found its output folder held by another run (EX_TEMPFAIL):
# a scheduler can tell "try again later" from a failure.
EXIT_BUSY = 75


class UsageError(ValueError):
    """A flag combination that cannot work (caught and shown as one line, exit 2)."""


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one line (and exit 2) instead of a usage block."""

    def error(self, message: str) -> None:  # argparse's hook; must not return
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def add_codec_checkpoint_argument(parser: argparse.ArgumentParser) -> None:
    """``--codec-checkpoint``: the one definition every command that may build EnCodec uses."""
    parser.add_argument("--codec-checkpoint", default=None, metavar="PATH",
                        help="EnCodec weights file, for EnCodec latents or checkpoints (default: the torch hub cache)")


def add_model_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device`` of the commands that run the fusion model in their own process."""
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="where the model runs (default: cuda if available)")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    parser.add_argument(
        "--num-cpus",
        type=int,
        default=None,
        help="CPUs for a local Ray started by this command (default: all); ignored when joining a cluster",
    )


def init_ray(num_cpus: int | None = None, *, debug: bool = False) -> None:
    """Join a running cluster, or start a local Ray.

    A cluster is joined when ``RAY_ADDRESS`` is set or ``ray start`` left one running on
    this machine; otherwise a local instance is started (with ``num_cpus`` if given).
    Ray's own processes (Train's controller and workers, Data's tasks) log a line every
    few seconds; they reach the terminal only with ``debug`` (``--debug``): failures still
    do, as the exceptions the commands turn into one line.
    """
    import ray
    import ray.data  # configures the "ray.data" logger on import

    # Ray Data logs every progress tick at INFO on a non-terminal; the pipelines print
    # their own progress lines, so its console handler shows warnings only (the full
    # log still goes to the session's ray-data.log).
    for handler in logging.getLogger("ray.data").handlers:
        if not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.WARNING)
    if ray.is_initialized():
        return
    quiet = {"logging_level": logging.WARNING, "log_to_driver": debug, **job_runtime_env()}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], **quiet)
        return
    address = running_cluster_address()
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **quiet)


def job_runtime_env() -> dict:
    """``ray.init``'s ``runtime_env`` argument for a job: the driver's storage settings
    (endpoint, region), never its credentials; empty when none is set.

    ``runtime_env`` is no secret channel: it shows in every worker's command line
    (``--serialized-runtime-env-context``), in the session's world-readable
    ``runtime_env_agent.log`` and, on a cluster, in the Jobs API. A local Ray started by
    ``init_ray`` inherits the driver's environment, credentials included (its raylet starts
    the workers); a cluster's nodes use their own (instance role, ``~/.aws/credentials``).
    """
    environment = storage_environment()
    return {"runtime_env": {"env_vars": environment}} if environment else {}


def running_cluster_address(timeout_seconds: float = 1.0) -> str | None:
    """The address of a Ray cluster running on this machine (``ray start``), if it answers.

    Ray records the last cluster started here in ``/tmp/ray/ray_current_cluster``; after a
    crash that file outlives the cluster, and ``ray.init(address="auto")`` would then wait a
    long time for a GCS that is gone. A quick TCP connect tells the two apart.
    """
    record = Path(os.environ.get("RAY_TMPDIR", tempfile.gettempdir())) / "ray" / "ray_current_cluster"
    try:
        address = record.read_text().strip()
        host, port = address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=timeout_seconds):
            return address
    except (OSError, ValueError):
        return None


def run_main(run: Callable[[argparse.Namespace], int | None], args: argparse.Namespace, prog: str) -> int:
    """Call ``run(args)`` and turn what it raises into an exit code and one line."""
    try:
        code = run(args)
        return 0 if code is None else code
    except FolderBusy as error:
        print(f"{prog}: busy: {error}", file=sys.stderr)
        return EXIT_BUSY
    except (UsageError, *USER_ERRORS) as error:
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # an internal failure: say what, hide the stack unless asked
        if getattr(args, "debug", False):
            traceback.print_exc()
        full = disk_full(error)
        if full:  # not the user's input, not a bug either: the line says what to do
            print(f"{prog}: error: {full} (free some space, then rerun)", file=sys.stderr)
            return 1
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        print(f"{prog}: internal error: {type(error).__name__}: {first} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


# Error numbers of a write that found no room: the disk is full, or the user's quota is.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def error_chain(error: BaseException) -> list[BaseException]:
    """``error`` and what caused it, each once: ``__cause__``, ``__context__``, and a Ray
    task error's ``cause``."""
    chain, pending = [], [error]
    while pending:
        current = pending.pop()
        if any(current is seen for seen in chain):
            continue
        chain.append(current)
        pending += [cause for cause in (current.__cause__, current.__context__, getattr(current, "cause", None))
                    if isinstance(cause, BaseException)]
    return chain


def disk_full(error: BaseException) -> str | None:
    """``"PATH: No space left on device"`` when ``error`` comes from a write that found no
    room (the path when known), else None.

    Looks through the error's causes and Ray's wrappers: a task's exception reaches the
    driver as a ``RayTaskError`` whose ``cause`` is that exception (its file name intact);
    Ray Data wraps it once more in a ``UserCodeException`` whose own cause is lost on the
    way, so there the worker's traceback text, which Ray keeps, is read instead.
    """
    chain = error_chain(error)
    for current in chain:
        if isinstance(current, OSError) and current.errno in DISK_FULL_ERRNOS:
            reason = current.strerror or os.strerror(current.errno)
            return f"{current.filename}: {reason}" if current.filename else reason
    for current in chain:
        text = f"{getattr(current, 'traceback_str', '')}\n{current}"
        for number in DISK_FULL_ERRNOS:
            reason = os.strerror(number)
            # how Python prints such an OSError: [Errno 28] No space left on device: '/the/path'
            match = re.search(rf"\[Errno {number}\] {re.escape(reason)}(?:: (['\"])(.+?)\1)?", text)
            if match:
                return f"{match.group(2)}: {reason}" if match.group(2) else reason
    return None


@dataclass(frozen=True)
class EntryPoint:
    """One pipeline as a command: the same flags under ``jingle`` and ``python -m``.

    Args:
        prog: the name shown in usage and error lines, e.g. ``"jingle demo"``.
        doc: the module docstring; its first line is the command's description.
        add_arguments: adds the command's flags to a parser.
        command: runs the parsed arguments; returns the exit code.
    """

    prog: str
    doc: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    command: Callable[[argparse.Namespace], int | None]

    @property
    def description(self) -> str:
        return self.doc.strip().splitlines()[0]

    def build_parser(self) -> OneLineParser:
        parser = OneLineParser(prog=self.prog, description=self.description)
        self.add_arguments(parser)
        return parser

    def add_to(self, commands: argparse._SubParsersAction, name: str, help: str) -> None:
        """Register as a sub-command of ``jingle``."""
        parser = commands.add_parser(name, help=help, description=self.description)
        self.add_arguments(parser)
        parser.set_defaults(handler=self.command, prog=self.prog)

    def main(self, argv: list[str] | None = None) -> int:
        args = self.build_parser().parse_args(argv)
        return run_main(self.command, args, self.prog)


def reporting(run: Callable[[argparse.Namespace], object]) -> Callable[[argparse.Namespace], int]:
    """The command of a pipeline whose ``run(args)`` returns a summary with ``report()``:
    run it and print the report."""

    def command(args: argparse.Namespace) -> int:
        print(run(args).report())
        return 0

    return command


def local_device(requested: str | None) -> str:
    """The torch device of a command run on this machine (``--device``; default: CUDA when present)."""
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here; use --device cpu")
    return requested or ("cuda" if torch.cuda.is_available() else "cpu")


def human_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"
