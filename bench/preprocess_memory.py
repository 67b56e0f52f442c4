"""The --memory part of bench/preprocess.py: the pipeline's peak memory as a corpus grows.

A run is ``jingle preprocess fusion`` in its own process (its flags from
``pipeline_arguments``), its Ray processes' memory sampled every ``MEMORY_SAMPLE_SECONDS``;
the largest sum is the run's peak. bench/preprocess.py runs it at 1x and ``MEMORY_SCALE``x
its corpus and holds the ratio against ``MEMORY_RATIO_AIM``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray  # noqa: F401 - first: it puts the psutil it bundles on sys.path
import psutil  # noqa: E402

from bench.machine import RAY_OPTIONS
from jingle.datasets.audio import Segmenting
from jingle.datasets.shards import read_manifest

REPO_ROOT = Path(__file__).resolve().parent.parent
ROWS_PER_SHARD = 64  # the pipeline's default
LATENT_DTYPE = "float32"  # the pipeline's default
MEMORY_RATIO_AIM = 1.3
MEMORY_SAMPLE_SECONDS = 0.25
MEGABYTE = 1024 * 1024

# The driver of a --memory run starts its Ray as the benchmark does (bench/machine.py).
MEMORY_DRIVER = f"""
import sys
import ray
ray.init(**{RAY_OPTIONS!r})
from jingle.pipelines.preprocess_fusion import main
sys.exit(main(sys.argv[1:]))
"""


@dataclass
class MemoryRun:
    """Peak memory of one pipeline subprocess and the Ray processes it started."""

    scale: int  # corpus size, in multiples of the benchmark's corpus
    corpus_minutes: float
    segments: int
    wall_seconds: float
    peak_megabytes: float
    measure: str  # "pss", or "rss" where PSS cannot be read
    peak_processes: dict[str, float] = field(default_factory=dict)  # name (x count) -> MB at the peak


def memory_lines(runs: list[MemoryRun]) -> list[str]:
    one, many = runs
    ratio = many.peak_megabytes / one.peak_megabytes
    lines = [
        f"memory (mel)   peak {one.measure.upper()} of the pipeline's driver and all its Ray processes: "
        f"1x ({one.corpus_minutes:.1f} min) {one.peak_megabytes:.0f} MB, "
        f"{many.scale}x ({many.corpus_minutes:.1f} min) {many.peak_megabytes:.0f} MB, "
        f"{many.scale}x/1x {ratio:.2f} (aim <= {MEMORY_RATIO_AIM}: {'met' if ratio <= MEMORY_RATIO_AIM else 'MISSED'})"
    ]
    for run in runs:
        processes = ", ".join(f"{name} {megabytes:.0f}" for name, megabytes in run.peak_processes.items())
        lines.append(f"{'':<14} {run.scale}x at its peak, MB: {processes}")
    return lines


def pipeline_arguments(
    pairs: Path, out_dir: Path, *, codec_name: str, checkpoint: Path | None, segmenting: Segmenting, encode_batch: int
) -> list[str]:
    """``jingle preprocess fusion`` flags for one benchmark run in its own process (the memory run)."""
    arguments = [
        "--pairs", str(pairs),
        "--out", str(out_dir),
        "--codec", codec_name,
        "--segment-seconds", repr(segmenting.segment_seconds),
        "--rows-per-shard", str(ROWS_PER_SHARD),
        "--latent-dtype", LATENT_DTYPE,
        "--encode-batch", str(encode_batch),
        "--quiet",
    ]  # fmt: skip
    return arguments + (["--codec-checkpoint", str(checkpoint)] if checkpoint else [])


# ---------------------------------------------------------------------- memory


def _process_tree(driver_pid: int) -> list[psutil.Process]:
    """The driver, its descendants (the Ray it starts: gcs_server, raylet and the raylet's
    workers and agents), and any process of its Ray session re-parented away from it.

    A Ray session folder is named after the driver's pid (``session_<time>_<pid>``) and
    every Ray service names it on its command line; matching that rather than "ray" keeps
    out the processes of any other Ray on the machine.
    """
    processes: dict[int, psutil.Process] = {}
    try:
        driver = psutil.Process(driver_pid)
        processes[driver_pid] = driver
        processes.update((child.pid, child) for child in driver.children(recursive=True))
    except psutil.NoSuchProcess:
        pass
    session = re.compile(rf"session_[0-9_-]+_{driver_pid}\b")
    for process in psutil.process_iter(["cmdline"]):
        if process.pid not in processes and session.search(" ".join(process.info["cmdline"] or [])):
            processes[process.pid] = process
    return list(processes.values())


def _process_name(process: psutil.Process, driver_pid: int) -> str:
    """A short name: the driver, a Ray worker's task or actor, a Python service's script."""
    if process.pid == driver_pid:
        return "driver"
    command_line = process.cmdline()
    if command_line and command_line[0].startswith("ray::"):
        return command_line[0].split()[0]
    scripts = [Path(part).name for part in command_line[1:] if part.endswith(".py")]
    return scripts[0] if scripts else process.name()


def _memory_bytes(process: psutil.Process) -> tuple[int, str]:
    """PSS (each shared page split between the processes that map it), else RSS."""
    try:
        return process.memory_full_info().pss, "pss"
    except (psutil.AccessDenied, AttributeError):
        return process.memory_info().rss, "rss"


def measure_memory(pairs: Path, out_dir: Path, *, segmenting: Segmenting, encode_batch: int, scale: int) -> MemoryRun:
    """Run the mel pipeline in a fresh subprocess with its own Ray, sampling its memory.

    A background thread sums the memory of the driver and all its Ray processes every
    ``MEMORY_SAMPLE_SECONDS``; the largest sum is the run's peak.
    """
    shutil.rmtree(out_dir, ignore_errors=True)
    command = [sys.executable, "-c", MEMORY_DRIVER] + pipeline_arguments(
        pairs, out_dir, codec_name="mel", checkpoint=None, segmenting=segmenting, encode_batch=encode_batch
    )
    started = time.perf_counter()
    driver = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = {"bytes": 0, "measure": "pss", "processes": {}}  # processes: name -> [count, bytes]

    def sample() -> None:
        while driver.poll() is None:
            total, measure, processes = 0, "pss", {}
            for process in _process_tree(driver.pid):
                try:
                    size, kind = _memory_bytes(process)
                    name = _process_name(process, driver.pid)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue  # ended between listing and reading
                total += size
                measure = "rss" if kind == "rss" else measure
                count_and_bytes = processes.setdefault(name, [0, 0])
                count_and_bytes[0] += 1
                count_and_bytes[1] += size
            if total > peak["bytes"]:
                peak.update(bytes=total, measure=measure, processes=processes)
            time.sleep(MEMORY_SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = driver.communicate()
    wall_seconds = time.perf_counter() - started
    sampler.join()
    if driver.returncode != 0:
        raise RuntimeError(f"the pipeline subprocess failed with exit code {driver.returncode}:\n{output[-3000:]}")
    if "raylet" not in peak["processes"]:
        raise RuntimeError("no raylet was seen under the pipeline subprocess: its Ray was not measured")
    totals = read_manifest(out_dir)["totals"]
    by_size = sorted(peak["processes"].items(), key=lambda item: -item[1][1])
    return MemoryRun(
        scale=scale,
        corpus_minutes=totals["audio_seconds"] / 60,
        segments=totals["rows"],
        wall_seconds=wall_seconds,
        peak_megabytes=peak["bytes"] / MEGABYTE,
        measure=peak["measure"],
        peak_processes={(name if count == 1 else f"{name} x{count}"): size / MEGABYTE for name, (count, size) in by_size},
    )
