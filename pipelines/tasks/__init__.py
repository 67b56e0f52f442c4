"""Training tasks by name: what ``jingle train MODEL`` and ``jingle tune MODEL`` pick.

A task states only what differs between models (``pipelines/tasks/base.py``); the loop,
checkpoints, resume, fault tolerance, data and MLflow are everyone's (``pipelines/worker.py``).
"""

from __future__ import annotations

from jingle.pipelines.tasks.base import Task, TaskPlan, TaskWorker

__all__ = ["Task", "TaskPlan", "TaskWorker", "TASK_NAMES", "get_task"]

TASK_NAMES = ("fusion", "pointer")


def get_task(name: str) -> Task:
    """The task of a model by name (imported on demand: each pulls in its own model)."""
    if name == "fusion":
        from jingle.pipelines.tasks.fusion import FusionTask

        return FusionTask()
    if name == "pointer":
        from jingle.pipelines.tasks.pointer import PointerTask

        return PointerTask()
    raise ValueError(f"unknown training task {name!r}; the tasks are {list(TASK_NAMES)}")
