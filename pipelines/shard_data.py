"""The shards a training reads: its manifest, the train/validation split by pair id, and
how each worker gets its rows (read once into memory, or streamed by Ray Data).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

from jingle.core.storage import Location, check_readable
from jingle.datasets.pairs import InputError
from jingle.datasets.shard_rows import MemoryRows, Rows, StreamedRows
from jingle.datasets.shards import read_manifest, shard_paths, shard_problem

# What one read or filter task of a streamed dataset asks for: they mostly wait on storage.
DATA_TASK_CPUS = 0.25


def split_pair_ids(pair_ids: list[str], validation_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic split by pair id: a pair's segments are all on one side.

    A pair goes to validation when a hash of (seed, id) falls under the fraction, so adding
    pairs later never moves an existing pair to the other side. With at least two pairs
    and a non-zero fraction, each side gets at least one.
    """
    def score(pair_id: str) -> float:
        digest = hashlib.sha256(f"{seed}\0{pair_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    ranked = sorted(pair_ids, key=score)
    validation = [pair_id for pair_id in ranked if score(pair_id) < validation_fraction]
    if validation_fraction > 0 and len(pair_ids) >= 2:
        if not validation:
            validation = ranked[:1]
        if len(validation) == len(pair_ids):
            validation = validation[:-1]
    held_out = set(validation)
    return sorted(p for p in pair_ids if p not in held_out), sorted(validation)


@dataclass(frozen=True)
class ShardData:
    """The shard folder a training reads, described from its manifest."""

    root: str
    kind: str
    settings: dict
    rows_by_pair: dict[str, int]
    files: tuple[str, ...]

    @property
    def codec(self) -> dict:
        return self.settings["codec"]

    @property
    def segmenting(self) -> dict:
        return self.settings["segmenting"]

    @property
    def size_bytes(self) -> int:
        return sum(Location.of(path).size() for path in self.files)

    @classmethod
    def open(cls, root: str | os.PathLike, kind: str = "fusion", *, flag: str = "--data") -> "ShardData":
        """The shard folder at ``root`` (a local path or an ``s3://``/``gs://`` URI);
        errors name it as ``flag``."""
        location = Location.of(root)
        check_readable(location, flag)
        root = str(location)
        if not location.is_dir():
            raise InputError(f"{flag} {root} does not exist")
        manifest = read_manifest(location)
        if manifest.get("kind") != kind:
            raise InputError(f"{flag} {root} holds {manifest.get('kind')!r} shards; jingle train {kind} needs jingle preprocess {kind} output")
        rows: dict[str, int] = {}
        for entry in manifest["files"].values():
            for pair_id, indices in entry["items"].items():
                rows[pair_id] = rows.get(pair_id, 0) + len(indices)
        if not rows:
            raise InputError(f"{flag} {root} holds no rows: run jingle preprocess {kind} first")
        # A lost or truncated shard would fail every worker the same way, retry after retry:
        # refuse it here, in one line (the content's sha256 is preprocessing's --verify).
        for name, entry in sorted(manifest["files"].items()):
            problem = shard_problem(location / manifest["shard_dir"] / name, entry, verify=False)
            if problem is not None:
                raise InputError(f"{flag} {root}: shard {manifest['shard_dir']}/{name} {problem}; rerun jingle preprocess "
                                 f"{kind} with the same --pairs and --out (it makes that shard's rows again)")
        return cls(root, kind, manifest["settings"], rows, tuple(shard_paths(location)))

    def plan(
        self, columns: tuple[str, ...], train_ids: list[str], validation_ids: list[str], *, max_in_memory_mb: int,
        validation: "ShardData | None" = None,
    ) -> "DataPlan":
        """What workers read: in memory when the shards are small enough, else streamed.
        With ``validation``, the validation rows come from that folder."""
        size = self.size_bytes + (validation.size_bytes if validation is not None else 0)
        in_memory = size <= max_in_memory_mb * 2**20
        if validation is None:
            return DataPlan(self.root, self.files, tuple(columns), tuple(train_ids), tuple(validation_ids), in_memory)
        return DataPlan(self.root, self.files, tuple(columns), tuple(train_ids), tuple(validation_ids), in_memory,
                        validation.files, validation.root)

    def split(self, validation_fraction: float, seed: int, *, validation: "ShardData | None" = None) -> tuple[list[str], list[str]]:
        """(training pair ids, validation pair ids): with a ``validation`` folder, every pair
        here trains and every pair there validates; else a split by pair id."""
        if validation is None:
            return split_pair_ids(sorted(self.rows_by_pair), validation_fraction, seed)
        self.check_validation(validation)
        return sorted(self.rows_by_pair), sorted(validation.rows_by_pair)

    def check_validation(self, validation: "ShardData") -> None:
        """A ``--validation`` folder must hold latents of the same codec and segmenting, and
        none of this folder's pairs (a pair on both sides would validate on training data)."""
        for key in ("codec", "segmenting"):
            mine, theirs = self.settings.get(key), validation.settings.get(key)
            if key == "codec":
                mine, theirs = (mine or {}).get("id"), (theirs or {}).get("id")
            if mine != theirs:
                raise InputError(f"--validation {validation.root} was preprocessed with {key} {theirs}, --data with {mine}: preprocess both alike")
        shared = sorted(set(self.rows_by_pair) & set(validation.rows_by_pair))
        if shared:
            raise InputError(
                f"--validation {validation.root} holds {len(shared)} pair(s) of --data (e.g. {shared[0]!r}): validation pairs must be held out"
            )


@dataclass(frozen=True)
class DataPlan:
    """A training's data, as the workers see it (plain values).

    Attributes:
        in_memory: every worker reads its rows once with pyarrow and keeps them (small
            data); otherwise the driver's Ray Datasets stream them every epoch.
    """

    root: str
    files: tuple[str, ...]
    columns: tuple[str, ...]
    train_ids: tuple[str, ...]
    validation_ids: tuple[str, ...]
    in_memory: bool
    validation_files: tuple[str, ...] = ()  # a --validation folder's shards; empty: the split of ``files``
    validation_root: str = ""  # that folder

    def describe(self) -> dict[str, Any]:
        """What a checkpoint records of the data (and the --validation folder, when given)."""
        described = {"shards": self.root, "train_pairs": len(self.train_ids), "validation_pairs": len(self.validation_ids),
                     "in_memory": self.in_memory}
        return {**described, "validation_shards": self.validation_root} if self.validation_root else described

    def ray_datasets(self) -> dict[str, Any]:
        """Streaming Ray Datasets of the two sides (never materialised on the driver)."""
        import ray.data

        def read(files: tuple[str, ...]) -> Any:
            columns = present_columns(files, self.columns)
            dataset = ray.data.read_parquet(list(files), num_cpus=DATA_TASK_CPUS).select_columns([*columns, "pair_id"])
            # Progress bars of the workers' splits would interleave with training logs, every epoch.
            dataset.context.enable_progress_bars = False
            return dataset

        training = read(self.files)
        sides = {"train": (training, set(self.train_ids)),
                 "validation": (read(self.validation_files) if self.validation_files else training, set(self.validation_ids))}
        return {
            name: dataset.filter(_PairFilter(ids), num_cpus=DATA_TASK_CPUS).select_columns(
                list(present_columns(self.validation_files if name == "validation" and self.validation_files else self.files, self.columns)))
            for name, (dataset, ids) in sides.items()
            if ids
        }

    def rows(self, context: Any, *, seed: int) -> tuple[Rows, Rows | None]:
        """This worker's training rows and the validation rows (all of them, on every
        worker, so that every rank reports the same validation metric)."""
        if not self.in_memory:
            validation = StreamedRows(context.stream("validation")) if self.validation_ids else None
            return StreamedRows(context.stream("train")), validation
        table = MemoryRows.read_table(self.files, self.columns)  # once, for both sides
        train = MemoryRows.from_table(table, self.columns, self.train_ids, shuffle_seed=seed, rank=context.rank, world_size=context.world_size)
        if not self.validation_ids:
            return train, None
        columns = self.columns
        if self.validation_files:  # a validation folder may lack columns only training reads (arrangements)
            columns = present_columns(self.validation_files, self.columns)
            held_out = MemoryRows.read_table(self.validation_files, columns)
        else:
            held_out = table
        # interleaved: the segments validation scores first span every validation pair
        return train, MemoryRows.from_table(held_out, columns, self.validation_ids, interleave=True)


def present_columns(files: tuple[str, ...], columns: tuple[str, ...]) -> tuple[str, ...]:
    """``columns`` less those the shards' schema lacks (the first file's, which every file shares)."""
    if not files:
        return columns
    import pyarrow.parquet as pq

    names = set(pq.read_schema(files[0]).names)  # a path or an s3:// / gs:// URI, as MemoryRows reads them
    return tuple(column for column in columns if column in names)


class _PairFilter:
    """Row filter keeping one side's pair ids (a class so Ray pickles the set once)."""

    def __init__(self, pair_ids: set[str]) -> None:
        self.pair_ids = pair_ids

    def __call__(self, row: dict) -> bool:
        return row["pair_id"] in self.pair_ids
