"""jingle installs under one ``jingle`` namespace, beside Hugging Face's ``datasets``.

The code lives in top-level folders named ``datasets``, ``models``, ``core`` and
``pipelines``; installed as they are, ``datasets`` would shadow Hugging Face's library (or be
shadowed by it) in every environment that has both. Here jingle's wheel is built and installed
into a fresh virtual environment that also sees Hugging Face's ``datasets``, and one process
imports both.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OWN_FOLDERS = ("core", "datasets", "models", "training", "evaluation", "pipelines")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(folder), str(ROOT)], check=True, capture_output=True, text=True, timeout=300)
    (built,) = folder.glob("jingle-*.whl")
    return built


def test_the_wheel_holds_one_top_level_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"jingle"}
    for folder in OWN_FOLDERS:
        assert f"jingle/{folder}/__init__.py" in names
    assert "jingle/pipelines/tasks/fusion.py" in names
    assert "jingle/evaluation/assets/basic_pitch/nmp.onnx" in names  # the transcriber's weights travel with it


def test_installed_beside_hugging_face_datasets_both_import(wheel, tmp_path):
    pytest.importorskip("datasets")  # Hugging Face's, from the test extra
    fresh = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True, timeout=120)
    python = fresh / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # jingle's dependencies (torch, Ray, ...) and Hugging Face's datasets come from this test's
    # environment, after the fresh one's own site-packages; its .pth files (the editable jingle
    # of this checkout among them) are not run, so only the installed wheel can answer `jingle`
    (site / "test_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    # --ignore-installed: the test environment's own (editable) jingle is visible through the
    # .pth above and would otherwise count as already installed
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--ignore-installed",
                    "--no-index", str(wheel)], check=True, capture_output=True, text=True, timeout=300, env=env)
    assert (site / "jingle" / "__init__.py").exists()
    assert not any((site / folder).exists() for folder in OWN_FOLDERS)

    probe = textwrap.dedent("""
        import datasets, jingle, jingle.datasets.audio, jingle.models.cascade, jingle.pipelines.cli
        print(datasets.__file__)
        print(hasattr(datasets, "load_dataset"))
        print(jingle.datasets.audio.__file__)
        print(jingle.__path__)
    """)
    result = subprocess.run([str(python), "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    hugging_face, has_loader, ours, search_path = result.stdout.splitlines()
    assert Path(hugging_face).parent.name == "datasets" and has_loader == "True"
    assert Path(ours).is_relative_to(site / "jingle" / "datasets")
    assert search_path == repr([str(site / "jingle")])  # a wheel install does not reach for a checkout

    help_text = subprocess.run([str(fresh / "bin" / "jingle"), "--help"], cwd=tmp_path, env=env, capture_output=True,
                               text=True, timeout=300)
    assert help_text.returncode == 0 and "preprocess" in help_text.stdout, help_text.stderr[-2000:]
