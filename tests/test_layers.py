"""The packages' layers: what each may import (ARCHITECTURE.md's rules, docs/layout.md).

core imports neither torch nor Ray; models, training and evaluation are plain torch (no Ray);
the networks know nothing of how they are trained or judged, and a score knows nothing of
training. Ray lives in pipelines/ (and datasets/' Ray Data glue)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# package -> the jingle packages it may import (itself always)
ALLOWED = {
    "core": set(),
    "models": {"core"},
    "evaluation": {"core", "models"},
    "training": {"core", "models", "evaluation", "datasets"},
}
NO_RAY = {"core", "models", "evaluation", "training"}
NO_TORCH = {"core"}


def imports_of(path: Path) -> set[str]:
    """Every module name a file imports, at any depth (imports inside functions count)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def violations(package: str) -> list[str]:
    found = []
    for path in sorted((ROOT / package).glob("*.py")):
        for name in sorted(imports_of(path)):
            parts = name.split(".")
            if parts[0] == "jingle" and len(parts) > 1 and parts[1] != package and parts[1] not in ALLOWED[package]:
                found.append(f"{path.relative_to(ROOT)} imports {name}")
            if parts[0] == "ray" and package in NO_RAY:
                found.append(f"{path.relative_to(ROOT)} imports {name}")
            if parts[0] == "torch" and package in NO_TORCH:
                found.append(f"{path.relative_to(ROOT)} imports {name}")
            if parts[0] in {"models", "training", "evaluation", "core", "datasets", "pipelines"}:
                found.append(f"{path.relative_to(ROOT)} imports {name} outside the jingle namespace")
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_the_layers_below_it(package):
    assert violations(package) == []


def test_the_check_sees_a_wrong_way_import(tmp_path, monkeypatch):
    """A network importing its training, found (the check above is not vacuous)."""
    fake = tmp_path / "models"
    fake.mkdir()
    (fake / "net.py").write_text("def f():\n    from jingle.training.losses import FusionLoss\n    import ray\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert violations("models") == ["models/net.py imports jingle.training.losses", "models/net.py imports ray"]
