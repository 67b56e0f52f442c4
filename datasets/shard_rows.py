"""A training worker's rows, as numpy batches: held in memory, or streamed by Ray Data.

A worker whose data is small reads its rows once with plain pyarrow and iterates them from
memory every epoch (``MemoryRows``): no Ray Data execution per epoch, which on a small
machine costs more than the epoch's steps. Where the data is large, Ray Data streams it
(``StreamedRows`` over the worker's ``DataIterator``). Both give the same batches: dicts of
column -> numpy array with one entry per row (fixed-shape tensors as ``[N, ...]`` arrays,
list columns as object arrays of 1-D arrays).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


class Rows(Protocol):
    def batches(self, batch_size: int, *, epoch: int, drop_last: bool = False) -> Iterator[dict[str, np.ndarray]]:
        """One epoch of this worker's rows in batches of ``batch_size``."""


def column_to_numpy(column: pa.ChunkedArray) -> np.ndarray:
    """An Arrow column -> numpy: fixed-shape tensors [N, ...], lists an object array."""
    column = column.combine_chunks()
    if isinstance(column.type, pa.FixedShapeTensorType):
        return column.to_numpy_ndarray()
    return column.to_numpy(zero_copy_only=False)


class MemoryRows:
    """Rows read once from Parquet files (those of the given pair ids, in a stable order).

    Args:
        table: the rows, one column per name.
        shuffle_seed: None keeps the stored order every epoch (validation); a seed draws a
            new order every epoch from (seed, epoch), the same on every worker, and each
            worker takes its equal share of it (``rank`` of ``world_size``), as a
            distributed sampler does.
    """

    def __init__(self, table: dict[str, np.ndarray], *, shuffle_seed: int | None = None, rank: int = 0, world_size: int = 1) -> None:
        self.table = table
        self.count = len(next(iter(table.values()))) if table else 0
        self.shuffle_seed, self.rank, self.world_size = shuffle_seed, rank, world_size

    @staticmethod
    def read_table(files: Sequence[str], columns: Sequence[str]) -> pa.Table:
        """The columns of every file, with the pair id and segment index that order them."""
        wanted = list(dict.fromkeys([*columns, "pair_id", "segment_index"]))
        tables = [pq.read_table(path, columns=wanted) for path in files]
        return pa.concat_tables(tables) if tables else pa.table({name: pa.array([], pa.string()) for name in wanted})

    @classmethod
    def from_table(
        cls, table: pa.Table, columns: Sequence[str], pair_ids: Sequence[str], *, interleave: bool = False, **options: Any
    ) -> "MemoryRows":
        """The rows of ``pair_ids``, in (pair id, segment index) order; with ``interleave``
        in (segment index, pair id) order: every pair's first segment, then every pair's
        second, so that the first rows of a validation set span all its pairs."""
        table = table.filter(pc.is_in(table["pair_id"], value_set=pa.array(sorted(pair_ids), pa.string())))
        keys = ["segment_index", "pair_id"] if interleave else ["pair_id", "segment_index"]
        table = table.sort_by([(key, "ascending") for key in keys])
        return cls({name: column_to_numpy(table[name]) for name in columns}, **options)

    @classmethod
    def read(cls, files: Sequence[str], columns: Sequence[str], pair_ids: Sequence[str], **options: Any) -> "MemoryRows":
        return cls.from_table(cls.read_table(files, columns), columns, pair_ids, **options)

    def __len__(self) -> int:
        return self.count

    def order(self, epoch: int) -> np.ndarray:
        """Row indices this worker visits in ``epoch``."""
        if self.shuffle_seed is None:
            return np.arange(self.count)
        permutation = np.random.default_rng([self.shuffle_seed, epoch]).permutation(self.count)
        share = self.count // self.world_size
        return permutation[self.rank * share : (self.rank + 1) * share]

    def batches(self, batch_size: int, *, epoch: int, drop_last: bool = False) -> Iterator[dict[str, np.ndarray]]:
        order = self.order(epoch)
        stop = len(order) - len(order) % batch_size if drop_last else len(order)
        for start in range(0, stop, batch_size):
            rows = order[start : start + batch_size]
            yield {name: values[rows] for name, values in self.table.items()}


class StreamedRows:
    """The worker's part of a Ray Dataset, read again every epoch (``DataIterator``)."""

    def __init__(self, iterator: Any) -> None:
        self.iterator = iterator

    def batches(self, batch_size: int, *, epoch: int, drop_last: bool = False) -> Iterator[dict[str, np.ndarray]]:
        return self.iterator.iter_batches(batch_size=batch_size, batch_format="numpy", drop_last=drop_last)
