"""What the benchmarks print about the machine they ran on."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import argparse
import logging

import ray  # first: it puts the psutil it bundles on sys.path
import psutil  # noqa: E402
import torch

# Benchmarks start their own Ray with address="local": init_ray would first try to join any
# Ray already running on the machine (a test session, another benchmark), whose work would
# compete with the one measured and whose processes are not the run's own.
RAY_OPTIONS = {"address": "local", "include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": True}


def add_ray_address_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ray-address",
        default=None,
        help="join this running Ray instead of starting one (the test suite's smoke run; timings then share its cluster)",
    )


def start_ray(address: str | None) -> None:
    """Join ``address``, or start a Ray of this benchmark's own (``RAY_OPTIONS``)."""
    from jingle.pipelines.common import init_ray

    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
    else:
        ray.init(**RAY_OPTIONS)
    init_ray()  # Ray is up, so this only quiets Ray Data's console logging as the pipelines do


def describe_machine() -> dict:
    """Cores, CPU model, memory, torch's default threads, versions and the load at start
    (a busy start makes the speeds low by an unknown amount)."""
    cpu = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return {
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "cpu": cpu,
        "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
        "torch_default_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "load_average_at_start": round(os.getloadavg()[0], 2),
    }
