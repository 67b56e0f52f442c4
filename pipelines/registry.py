"""The models jingle trains, by name: what ``jingle preprocess|train|tune MODEL`` offer.

A model is one ``Model`` entry: its training task (``pipelines/tasks/``, which names the
config class), the config a search starts from, the command that makes its shards, and the
help of its commands. The command line is generated from these entries, so a third model is
its task file, its config file and one ``register(...)`` call (``tests/toy_model.py`` is
one, registered by the tests).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jingle.pipelines.common import EntryPoint
    from jingle.pipelines.tasks.base import Task


@dataclass(frozen=True)
class Model:
    """One model's entry.

    Attributes:
        name: the ``MODEL`` of the commands.
        task: ``"module:Class"`` of its ``Task`` (imported on demand: each pulls in its model).
        default_config: ``jingle tune``'s base config when ``--config`` is not given, relative
            to the project root.
        train_help: one line for ``jingle train --help``.
        tune_help: one line for ``jingle tune --help``.
        preprocess: the module whose ``ENTRY_POINT`` is ``jingle preprocess MODEL`` (None: the
            model trains on another model's shards, ``Task.shard_kind``).
        preprocess_help: one line for ``jingle preprocess --help``.
    """

    name: str
    task: str
    default_config: str
    train_help: str
    tune_help: str
    preprocess: str | None = None
    preprocess_help: str = ""

    def load_task(self) -> "Task":
        return load_task(self.task)

    def preprocess_entry_point(self) -> "EntryPoint | None":
        return importlib.import_module(self.preprocess).ENTRY_POINT if self.preprocess else None


MODELS: dict[str, Model] = {}


def task_reference(task: "Task") -> str:
    """``"module:Class"`` of a task: what a worker or a trial process imports it by, so a
    model registered only in the driver's process (a plug-in, a test) trains all the same."""
    return f"{type(task).__module__}:{type(task).__qualname__}"


def load_task(reference: str) -> "Task":
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)()


def register(model: Model) -> Model:
    """Add a model (a name already taken by another entry is refused)."""
    known = MODELS.get(model.name)
    if known is not None and known != model:
        raise ValueError(f"a model named {model.name!r} is already registered ({known.task})")
    MODELS[model.name] = model
    return model


def get_model(name: str) -> Model:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; the models are {sorted(MODELS)}") from None


register(Model(
    name="fusion",
    task="jingle.pipelines.tasks.fusion:FusionTask",
    default_config="configs/fusion.json",
    train_help="the fusion model on preprocessed shards",
    tune_help="the fusion model's loss weights and masking (ranked by val_score)",
    preprocess="jingle.pipelines.preprocess_fusion",
    preprocess_help="fusion pairs (input/, target/)",
))
register(Model(
    name="pointer",
    task="jingle.pipelines.tasks.pointer:PointerTask",
    default_config="configs/pointer/mini.json",
    train_help="the pointer network on preprocessed shards",
    tune_help="the pointer network's settings (ranked by val_accuracy_within_2)",
    preprocess="jingle.pipelines.preprocess_pointer",
    preprocess_help="pointer pairs (raw/, edit/, optional pointers/ or edl/)",
))
