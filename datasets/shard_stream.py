"""The task-neutral end of a preprocessing pipeline: journal records, progress, and the
driver's commit loop (fusion's ``datasets/fusion_preprocess.py`` and the pointer network's
``datasets/pointer_preprocess.py`` both end in it).

A pipeline's last stage writes one Parquet shard per batch and yields one row
``{"entry": json}`` per shard (``shard_entry``); ``stream_commits`` runs the pipeline on
the driver and commits each entry to the ``ShardStore`` journal as it lands.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import ray

from jingle.datasets.pairs import Reject
from jingle.datasets.shards import ShardStore

# The least object-store memory a pipeline's queue is given, whatever its batches' size.
_MIN_IN_FLIGHT_BYTES = 256 * 1024 * 1024


def shard_entry(
    batch: dict[str, np.ndarray],
    *,
    written: dict | None,
    keys: list[tuple[str, int]],
    audio_seconds: float,
    encoded_on: Iterable[str] = (),
) -> dict:
    """The journal record of one writer batch (``ShardStore.commit``'s ``entry``).

    Args:
        batch: the writer's rows, with ``pair_id``, ``segments_total``, ``fingerprint`` and
            the ``reject_*`` columns (``reject_reason`` empty for good rows).
        written: what ``write_shard`` returned, or None when the batch held only rejects.
        keys: (item id, segment index) of every row written.
        audio_seconds: audio the written rows cover.
        encoded_on: the Ray node id of every written row's encoder (repeats allowed);
            stored as the sorted distinct ids. Empty where no actor stage encodes
            (pointer rows are featurized in plain tasks).
    """
    entry = {"file": None, "rows": 0, "bytes": 0, "sha256": "", "items": {}, "audio_seconds": 0.0}
    entry["encoded_on"] = sorted({str(node_id) for node_id in encoded_on}) if written is not None else []
    if written is not None:
        entry.update(written)
        for pair_id, index in keys:
            entry["items"].setdefault(pair_id, []).append(index)
        entry["audio_seconds"] = audio_seconds
    good = batch["reject_reason"] == ""
    entry["segments_total"] = {str(p): int(t) for p, t, ok in zip(batch["pair_id"], batch["segments_total"], good) if ok}
    entry["rejects"] = {}
    for p, path, reason, stage, ok in zip(
        batch["pair_id"], batch["reject_path"], batch["reject_reason"], batch["reject_stage"], good
    ):
        if not ok:
            reject = {"pair_id": str(p), "path": str(path), "reason": str(reason), "stage": str(stage)}
            entry["rejects"].setdefault(str(p), []).append(reject)
    entry["fingerprints"] = {str(p): str(f) for p, f in zip(batch["pair_id"], batch["fingerprint"])}
    return entry


@dataclass
class Progress:
    """Counters the driver keeps while committing; printed as the run goes."""

    started: float = field(default_factory=time.perf_counter)
    shards: int = 0
    rows: int = 0
    audio_seconds: float = 0.0
    pairs_done: int = 0
    pairs_total: int = 0
    decode_rejects: list[Reject] = field(default_factory=list)

    @property
    def wall_seconds(self) -> float:
        return time.perf_counter() - self.started

    def line(self) -> str:
        rate = self.audio_seconds / max(self.wall_seconds, 1e-9)
        return (
            f"[preprocess] {self.pairs_done}/{self.pairs_total} pairs, {self.rows} segments, "
            f"{self.audio_seconds / 60:.1f} min audio, {rate:.1f} audio-s/s"
        )


def cap_in_flight(dataset: ray.data.Dataset, object_store_bytes: int) -> None:
    """Bound what a pipeline keeps in the object store at once (memory stays flat)."""
    limits = dataset.context.execution_options.resource_limits
    dataset.context.execution_options.resource_limits = limits.copy(
        object_store_memory=max(_MIN_IN_FLIGHT_BYTES, object_store_bytes)
    )


def stream_commits(
    dataset: ray.data.Dataset, store: ShardStore, progress: Progress, on_progress: Callable[[Progress], None]
) -> Progress:
    """Run a pipeline whose last stage yields ``{"entry": json}`` rows; commit each shard."""
    finished: set[str] = set()
    for record in dataset.iter_rows():
        entry = json.loads(record["entry"])
        store.commit(entry)
        progress.shards += entry["file"] is not None
        progress.rows += entry["rows"]
        progress.audio_seconds += entry["audio_seconds"]
        for item_id, rejects in entry["rejects"].items():
            progress.decode_rejects += [Reject(**reject) for reject in rejects]
            finished.add(item_id)
        finished.update(item_id for item_id in entry["items"] if store.items[item_id].complete())
        progress.pairs_done = len(finished)
        on_progress(progress)
    return progress
