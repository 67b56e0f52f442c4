"""Shared fixtures: one local Ray per test session, generated audio under tmp_path."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

# No test may reach the network or the user's torch hub cache.
os.environ["JINGLE_OFFLINE"] = "1"


# fixtures that start or join a Ray: a test using one (directly or through another fixture)
# is marked ``ray`` even where its module forgot to say so
RAY_FIXTURES = frozenset({"ray_session", "ray_address"})


def pytest_collection_modifyitems(config, items):
    """Mark the reliability table's tests (tests/reliability/cases.py) ``reliability``, and
    every test that uses the session's Ray ``ray``."""
    from tests.reliability.cases import case_tests

    listed = case_tests()
    for item in items:
        node = item.nodeid.split("[")[0]  # every case of a parametrised test
        if node in listed or node.startswith("tests/reliability/"):
            item.add_marker(pytest.mark.reliability)
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())) and not item.get_closest_marker("ray"):
            item.add_marker(pytest.mark.ray)


@pytest.fixture(autouse=True)
def _isolated_torch_hub(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.getbasetemp() / "torch-home"))


@pytest.fixture(scope="session")
def ray_session():
    """The session's one Ray instance (2 CPUs, as on the CI machine)."""
    import ray

    if not ray.is_initialized():
        # address="local": a new instance even when another Ray runs on this machine (ray start, a test head)
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def ray_address(ray_session) -> str:
    """Address that a subprocess can join (RAY_ADDRESS) instead of starting its own Ray."""
    return ray_session.get_runtime_context().gcs_address


def tone(seconds: float, sample_rate: int, frequency: float = 220.0, channels: int = 1) -> np.ndarray:
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    mono = (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)
    return mono if channels == 1 else np.stack([mono * (0.5 + 0.5 * c / channels) for c in range(channels)], axis=1)


def write(path: Path, audio: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), audio, sample_rate, subtype=subtype)
    return path


def write_pair(root: Path, name: str, seconds: float, sample_rate: int = 24_000, frequency: float = 220.0) -> None:
    write(root / "input" / f"{name}.wav", tone(seconds, sample_rate, frequency), sample_rate)
    write(root / "target" / f"{name}.wav", tone(seconds, sample_rate, frequency * 1.5), sample_rate)


@pytest.fixture(scope="session")
def encodec_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint file saved from a randomly initialised EnCodec (weights cannot be downloaded)."""
    import torch
    from encodec import EncodecModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("encodec") / "encodec_24khz-random.th"
    torch.save(EncodecModel.encodec_model_24khz(pretrained=False).state_dict(), path)
    return path


def write_training_config(folder: Path, base: dict, **training) -> Path:
    """``base`` (a training config as a dict) with ``training`` settings replaced, written to
    ``folder/config.json``; returns that path."""
    import json

    config = json.loads(json.dumps(base))
    config["training"].update(training)
    path = folder / "config.json"
    path.write_text(json.dumps(config))
    return path


def copy_tree(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination, symlinks=True)
    return destination


def run_benchmark(script: str, ray_address: str, *args: str):
    """``python bench/SCRIPT ARGS --ray-address ADDR`` from the repository (a benchmark's smoke run
    joins the session's Ray); returns the finished process with its output captured."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    return subprocess.run([sys.executable, f"bench/{script}", *args, "--ray-address", ray_address], cwd=repo,
                          capture_output=True, text=True, timeout=600, env={**os.environ}, check=False)


@pytest.fixture(scope="session")
def fusion_train_shards(ray_session, tmp_path_factory) -> Path:
    """Mel-codec shards of 6 generated pairs (3.2 to 4.5 s, 1 s segments), made once per
    session for the training tests (tests/test_train_fusion.py, tests/reliability/)."""
    from jingle.datasets.synth import CorpusSpec, write_fusion_corpus
    from jingle.pipelines import preprocess_fusion

    root = tmp_path_factory.mktemp("train-data")
    write_fusion_corpus(root / "pairs", CorpusSpec(pairs=6, min_seconds=3.2, max_seconds=4.5, seed=5))
    preprocess_fusion.run(preprocess_fusion.spec(pairs=str(root / "pairs"), out=root / "shards", segment_seconds=1, quiet=True))
    return root / "shards"
