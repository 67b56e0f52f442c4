"""A search's trials as the driver sums them up: one row per trial (its values, curve,
best value and checkpoint), ``trials.csv`` and ``trials.png`` (``pipelines/tune.py``)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jingle.pipelines.loop import Selection

# What a diverged trial reports for its selection metric: ASHA never stops a NaN trial.
DIVERGED = 1e9


@dataclass
class TrialRow:
    trial_id: str
    params: dict[str, Any]
    last_epoch: int
    best: float | None
    stopped_early: bool
    status: str
    curve: list[tuple[int, float]]  # (epoch, metric)
    checkpoint: str | None = None  # its best checkpoint, as Ray names its path


def trial_rows(results, metric: str, mode: str, max_epochs: int) -> list[TrialRow]:
    rows = []
    for result in results:
        frame = result.metrics_dataframe
        curve: list[tuple[int, float]] = []
        if frame is not None and metric in frame and "epoch" in frame:
            epoch_rows = frame[frame[metric].notna() & frame["epoch"].notna()]
            curve = [(int(epoch), float(value)) for epoch, value in zip(epoch_rows["epoch"], epoch_rows[metric])]
            curve = [point for point in curve if abs(point[1]) < DIVERGED]
        last_epoch = int((result.metrics or {}).get("epoch", 0) or 0)
        values = [value for _, value in curve]
        best = (max(values) if mode == "max" else min(values)) if values else None
        status = "ERROR" if result.error is not None else "TERMINATED"
        rows.append(TrialRow(
            trial_id=str((result.metrics or {}).get("trial_id") or Path(result.path).name),
            params=dict(result.config or {}),
            last_epoch=last_epoch,
            best=best,
            stopped_early=result.error is None and last_epoch < max_epochs,
            status=status,
            curve=curve,
            checkpoint=best_checkpoint_path(result, Selection(metric, mode)),
        ))
    return rows


def write_trials_csv(path: Path, rows: list[TrialRow], keys: list[str], metric: str) -> None:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["trial_id", *keys, "last_epoch", f"best_{metric}", "stopped_early", "status", "best_checkpoint"])
        for row in rows:
            writer.writerow([row.trial_id, *(row.params.get(key, "") for key in keys), row.last_epoch,
                             "" if row.best is None else row.best, row.stopped_early, row.status, row.checkpoint or ""])


def trials_figure(path: Path, rows: list[TrialRow], *, metric: str, max_epochs: int, title: str) -> Path:
    """The selection metric against epoch, one line per trial; a trial ASHA stopped ends
    early, marked with an x."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from jingle.pipelines.figures import save_figure

    figure = Figure(figsize=(9, 5), layout="constrained")
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    for row in rows:
        if not row.curve:
            continue
        epochs, values = zip(*row.curve)
        line, = axis.plot(epochs, values, marker="o", markersize=3, linewidth=1.2, label=row.trial_id)
        if row.stopped_early:
            axis.plot(epochs[-1], values[-1], marker="x", markersize=10, color=line.get_color())
    axis.axvline(max_epochs, color="grey", linewidth=0.8, linestyle=":")
    axis.set_xlabel("epoch")
    axis.set_ylabel(metric)
    axis.grid(alpha=0.3)
    if len(rows) <= 12 and any(row.curve for row in rows):
        axis.legend(fontsize=7, loc="best")
    return save_figure(figure, path, title)


def best_checkpoint_path(result, selection: Selection) -> str | None:
    """The trial's best checkpoint: Tune's own (a trial that trains in its process), or
    the path its trainer reported with its best result (``TuneReportCallback`` sends
    ``checkpoint_path``: a multi-worker trial's checkpoints stay in its trainer's run)."""
    if result.best_checkpoints:
        return result.get_best_checkpoint(selection.metric, selection.mode).path
    frame = result.metrics_dataframe
    if frame is not None and "checkpoint_path" in frame and selection.metric in frame:
        rows = frame[frame["checkpoint_path"].notna() & frame[selection.metric].notna()]
        if len(rows):
            index = rows[selection.metric].idxmax() if selection.mode == "max" else rows[selection.metric].idxmin()
            return str(rows.loc[index, "checkpoint_path"])
    return result.checkpoint.path if result.checkpoint is not None else None
