"""What the benchmarks print about the machine they ran on."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import psutil
import ray
import torch


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
