"""Training tasks by name: what ``jingle train MODEL`` and ``jingle tune MODEL`` pick.

A task states only what differs between models (``pipelines/tasks/base.py``); the loop,
checkpoints, resume, fault tolerance, data and MLflow are everyone's (``pipelines/worker.py``).
Which tasks exist is the model registry's (``pipelines/registry.py``).
"""

from __future__ import annotations

from jingle.pipelines.tasks.base import Task, TaskPlan, TaskWorker

__all__ = ["Task", "TaskPlan", "TaskWorker", "get_task"]


def get_task(name: str) -> Task:
    """The task of a registered model by name (imported on demand: each pulls in its own model)."""
    from jingle.pipelines.registry import get_model

    return get_model(name).load_task()
