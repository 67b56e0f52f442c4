"""Latent shards on disk: Parquet files, a manifest, a journal and the rejects table.

Layout of an output folder::

    OUT/shards/part-<hash>.parquet   rows (several per file); the hash names the rows' keys
    OUT/manifest.json                settings, per-file row counts and checksums, per-item state
    OUT/rejects.parquet              path, reason (and pair id, stage) of every file not used
    OUT/journal.jsonl                only while a run is going: one line per committed shard

Why it is safe to kill a run at any point:

- a shard is written to ``shards/.tmp-*`` and renamed to its final name only when complete
  (and fsynced), so no partial file ever carries a final name;
- a shard counts once a journal line names it; the journal is folded into the manifest at
  the end of the run, or at the start of the next one if the run died;
- at start, shard files that neither the manifest nor the journal name (renamed, but the
  run died before the journal line) are deleted, and their rows are made again.

In an object store (``s3://``, ``gs://``; ``core/storage.py``) a shard is one PUT under its
final name (an object appears whole or not at all), the journal is one object per commit
under ``OUT/journal/``, and the lock is an object with a heartbeat (no ``flock`` there).

One run at a time holds a folder (``OUT/.lock``). A second run waits for it or stops with
one line (``busy``); a lock whose run is gone (killed, even by SIGKILL) is taken over: a
local lock is an ``flock`` the kernel drops with its process, an object-store lock names
its host and process and is refreshed every ``LOCK_HEARTBEAT_S`` (``datasets/folder_lock.py``); it is stale when that
process is gone (same host) or its heartbeat is older than ``LOCK_STALE_S``.

Rows are keyed by (item id, segment index), so a rerun makes exactly the missing rows:
none twice, none missing. An item whose files changed (size or mtime) invalidates every
shard holding its rows; the other items of those shards are redone too.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jingle.core.storage import Location, StorageError
from jingle.datasets.folder_lock import LOCK, FolderBusy, FolderLock  # noqa: F401 (LOCK, FolderBusy: imported from here)
from jingle.datasets.pairs import InputError, Reject

SCHEMA_VERSION = 1
SHARD_DIR = "shards"
MANIFEST = "manifest.json"
JOURNAL = "journal.jsonl"
JOURNAL_DIR = "journal"  # object stores: one object per commit
REJECTS = "rejects.parquet"
LATENT_DTYPES = ("float32", "float16")

REJECT_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("reason", pa.string()),
        ("pair_id", pa.string()),
        ("stage", pa.string()),
    ]
)


def fusion_schema(*, dim: int, frames: int, latent_dtype: str, codec_id: str, arrangements: bool = False) -> pa.Schema:
    """Row schema of fusion shards. Latents are ``arrow.fixed_shape_tensor`` columns, so
    their [D, T] shape travels in the schema and plain pyarrow can rebuild the arrays.

    With ``arrangements`` (pairs that come with reference arrangements), two more columns:
    ``arrangement_latent`` (the arrangement's window, encoded like the others; the codec's
    silence where the pair has none) and ``has_arrangement``."""
    if latent_dtype not in LATENT_DTYPES:
        raise ValueError(f"latent_dtype must be one of {LATENT_DTYPES}, got {latent_dtype!r}")
    latent = pa.fixed_shape_tensor(pa.from_numpy_dtype(np.dtype(latent_dtype)), [dim, frames])
    return pa.schema(
        [
            ("pair_id", pa.string()),
            ("segment_index", pa.int32()),
            ("input_path", pa.string()),
            ("target_path", pa.string()),
            ("start_s", pa.float64()),
            ("end_s", pa.float64()),
            ("codec_id", pa.string()),
            ("sample_rate", pa.int32()),
            ("frame_rate", pa.float64()),
            ("audio_sha256", pa.string()),
            ("input_latent", latent),
            ("target_latent", latent),
            *([("arrangement_latent", latent), ("has_arrangement", pa.bool_())] if arrangements else []),
        ],
        metadata={
            "jingle.kind": "fusion",
            "jingle.schema_version": str(SCHEMA_VERSION),
            "jingle.codec_id": codec_id,
        },
    )


def latents_to_numpy(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A fixed-shape tensor column -> [N, D, T] array (plain pyarrow, no Ray)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.to_numpy_ndarray()


def shard_name(keys: Iterable[tuple[str, int]], codec_id: str) -> str:
    """Content-addressed file name: the same rows always get the same name."""
    digest = hashlib.sha256(codec_id.encode())
    for item_id, index in sorted(keys):
        digest.update(f"\n{item_id}\x00{index}".encode())
    return f"part-{digest.hexdigest()[:20]}.parquet"


def write_shard(out_dir: str | os.PathLike, table: pa.Table, keys: list[tuple[str, int]], codec_id: str) -> dict:
    """Write ``table`` as one shard, atomically. Runs on any worker (shared storage).

    Returns:
        ``{"file", "rows", "bytes", "sha256"}`` for the journal.
    """
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    data = buffer.getvalue()
    name = shard_name(keys, codec_id)
    (Location.of(out_dir) / SHARD_DIR / name).write_bytes(data)
    return {"file": name, "rows": table.num_rows, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def shard_problem(path: Location, entry: dict, *, verify: bool) -> str | None:
    """What is wrong with one committed shard against its manifest entry, or None.

    Existence and size always (a stat); the content's sha256 with ``verify`` (a full read).
    """
    if not path.exists():
        return "is missing"
    size = path.size()
    if "bytes" in entry and size != entry["bytes"]:
        return f"has {size} bytes, the manifest says {entry['bytes']} (truncated or replaced)"
    if verify and "sha256" in entry and hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
        return "does not match the manifest's sha256 (corrupt)"
    return None


@dataclass
class ItemState:
    fingerprint: str
    segments_total: int | None = None
    rows: dict[str, list[int]] = field(default_factory=dict)  # shard file -> segment indices

    def done(self) -> set[int]:
        return {index for indices in self.rows.values() for index in indices}

    def complete(self) -> bool:
        return self.segments_total is not None and len(self.done()) >= self.segments_total


@dataclass(frozen=True)
class WorkItem:
    """An item to (re)process and the segment indices it already has."""

    item_id: str
    fingerprint: str
    skip: tuple[int, ...] = ()


class ShardStore:
    """The output folder of one preprocessing target, opened for one run.

    Args:
        out_dir: the folder (created if missing): a local path or an ``s3://``/``gs://`` URI.
        kind: ``"fusion"`` or ``"pointer"``.
        settings: everything that makes rows incompatible when it changes (codec id,
            segmenting, latent dtype...). A folder written with other settings is refused.
        wait: when another run holds the folder, wait for it (else ``FolderBusy``).
        verify: also check every committed shard's sha256 against the manifest (a full
            read); existence and size are always checked. A damaged shard is dropped, and
            the rows it held (of every pair in it) are made again by the run.

    Raises:
        FolderBusy: another run holds the folder.
        InputError: the folder cannot be created, or its settings differ.
    """

    def __init__(self, out_dir: str | os.PathLike | Location, *, kind: str, settings: dict, wait: bool = False,
                 verify: bool = False) -> None:
        self.root = Location.of(out_dir)
        self.verify = verify
        self.kind = kind
        self.settings = settings
        self.shard_dir = self.root / SHARD_DIR
        try:
            self.shard_dir.mkdir()
        except StorageError as error:
            raise InputError(f"--out {error}") from None
        self._lock = FolderLock(self.root, wait=wait)
        self.files: dict[str, dict] = {}
        self.items: dict[str, ItemState] = {}
        self.decode_rejects: dict[str, dict] = {}  # item id -> {"fingerprint", "rejects": [...]}
        self.recovered_shards = 0
        self.removed_orphans = 0
        self.invalidated_files = 0
        self.damaged_files: list[tuple[str, str]] = []  # (shard name, what was wrong): dropped, their pairs redone
        self._journal_file = None  # local: the open journal.jsonl
        self._commits = 0  # commits of this run
        try:
            self._load()
        except BaseException:
            self._lock.release()
            raise

    @property
    def took_over(self) -> dict | None:
        """What the lock of a run that died said (host, pid, started), if one was taken over."""
        return self._lock.took_over

    # -- loading and recovery ---------------------------------------------------

    def _load(self) -> None:
        manifest_path = self.root / MANIFEST
        try:
            text = manifest_path.read_text()
        except FileNotFoundError:
            text = None
        if text is not None:
            try:
                manifest = json.loads(text)
            except json.JSONDecodeError as error:
                raise InputError(f"{manifest_path} is unreadable ({error}); move the folder aside and rerun") from None
            if manifest.get("kind") != self.kind:
                raise InputError(f"--out {self.root} holds {manifest.get('kind')!r} shards, not {self.kind!r}")
            if manifest.get("schema_version") != SCHEMA_VERSION:
                raise InputError(
                    f"--out {self.root} has schema version {manifest.get('schema_version')}, this jingle writes {SCHEMA_VERSION}"
                )
            differences = [
                f"{key}: folder has {manifest['settings'].get(key)!r}, this run {self.settings.get(key)!r}"
                for key in dict.fromkeys([*self.settings, *manifest["settings"]])
                if manifest["settings"].get(key) != self.settings.get(key)
            ]
            if differences:
                raise InputError(
                    f"--out {self.root} was written with other settings ({'; '.join(differences)}); "
                    f"use another --out or the same settings"
                )
            self.files = manifest["files"]
            self.items = {key: ItemState(**value) for key, value in manifest["items"].items()}
            self.decode_rejects = manifest.get("decode_rejects", {})
        journal = self._journal_lines()
        for line in journal:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                break  # a torn last line: the shard it named is an orphan, made again
            self._apply(entry)
            self.recovered_shards += entry.get("file") is not None
        self._remove_orphans()
        self._drop_damaged()
        if journal or self.damaged_files:
            self._write_manifest()
            self._clear_journal()

    def _journal_lines(self) -> list[str]:
        """The commits a run that died left (none after a run that ended)."""
        if self.root.is_local:
            try:
                return (self.root / JOURNAL).read_text().splitlines()
            except FileNotFoundError:
                return []
        return [entry.read_text() for entry in (self.root / JOURNAL_DIR).list() if entry.name.endswith(".json")]

    def _clear_journal(self) -> None:
        if self.root.is_local:
            (self.root / JOURNAL).delete()
        else:
            for entry in (self.root / JOURNAL_DIR).list():
                entry.delete()

    def _remove_orphans(self) -> None:
        """Delete shard files that no commit names, and temporary files."""
        for path in self.shard_dir.list():
            if path.name.startswith(".tmp-") or (path.name.endswith(".parquet") and path.name not in self.files):
                path.delete()
                self.removed_orphans += not path.name.startswith(".tmp-")

    def _drop_damaged(self) -> None:
        """Drop committed shards that are missing, of the wrong size or (``verify``) of the
        wrong content: their rows count as not done, so ``plan`` makes them again."""
        for name in sorted(self.files):
            problem = shard_problem(self.shard_dir / name, self.files[name], verify=self.verify)
            if problem is not None:
                self.damaged_files.append((name, problem))
                self._drop_file(name)

    def _apply(self, entry: dict) -> None:
        if entry.get("file"):
            self.files[entry["file"]] = {
                key: entry[key] for key in ("rows", "bytes", "sha256", "items", "audio_seconds", "encoded_on")
                if key in entry  # encoded_on: the Ray nodes that encoded the rows (absent in older journals)
            }
            for item_id, indices in entry["items"].items():
                state = self.items.setdefault(item_id, ItemState(entry["fingerprints"][item_id]))
                state.rows[entry["file"]] = sorted(indices)
        for item_id, total in entry.get("segments_total", {}).items():
            state = self.items.setdefault(item_id, ItemState(entry["fingerprints"][item_id]))
            state.segments_total = total
        for item_id, rejects in entry.get("rejects", {}).items():
            self.decode_rejects[item_id] = {"fingerprint": entry["fingerprints"][item_id], "rejects": rejects}

    # -- planning ---------------------------------------------------------------

    def plan(self, fingerprints: dict[str, str]) -> list[WorkItem]:
        """What to process, given the current items and their fingerprints.

        Items whose fingerprint changed lose their shards (and those shards' other rows);
        items already rejected at decode with the same fingerprint are not retried.
        """
        changed = {
            item_id
            for item_id, fingerprint in fingerprints.items()
            if item_id in self.items and self.items[item_id].fingerprint != fingerprint
        }
        stale_files = {name for item_id in changed for name in self.items[item_id].rows}
        for name in stale_files:
            self._drop_file(name)
        for item_id in changed:
            del self.items[item_id]
        self.invalidated_files += len(stale_files)
        work = []
        for item_id, fingerprint in fingerprints.items():
            rejected = self.decode_rejects.get(item_id)
            if rejected is not None:
                if rejected["fingerprint"] == fingerprint:
                    continue
                del self.decode_rejects[item_id]
            state = self.items.get(item_id)
            if state is not None and state.complete():
                continue
            work.append(WorkItem(item_id, fingerprint, tuple(sorted(state.done())) if state else ()))
        return work

    def _drop_file(self, name: str) -> None:
        for item_id in self.files.pop(name)["items"]:
            if item_id in self.items:
                self.items[item_id].rows.pop(name, None)
        (self.shard_dir / name).delete()

    # -- committing -------------------------------------------------------------

    def commit(self, entry: dict) -> None:
        """Record a written shard (and the segment counts and rejects that came with it).

        ``entry`` keys: ``file`` (or None), ``rows``, ``bytes``, ``sha256``, ``items``
        (item id -> segment indices), ``audio_seconds``, ``segments_total`` (item id ->
        count), ``rejects`` (item id -> list of reject dicts), ``fingerprints``.
        """
        line = json.dumps(entry, sort_keys=True)
        if self.root.is_local:
            journal = Path(self.root.uri) / JOURNAL
            try:
                if self._journal_file is None:
                    self._journal_file = open(journal, "a")
                self._journal_file.write(line + "\n")
                self._journal_file.flush()
                os.fsync(self._journal_file.fileno())
            except OSError as error:  # write() and fsync() name no file: name the journal
                if error.errno is None:
                    raise
                raise OSError(error.errno, error.strerror, str(journal)) from error
        else:
            (self.root / JOURNAL_DIR / f"{self._commits:08d}-{uuid.uuid4().hex[:8]}.json").write_text(line)
        self._commits += 1
        self._apply(entry)

    def finish(self, rejects: list[Reject]) -> bool:
        """Fold the journal into the manifest and write ``rejects.parquet``.

        Returns:
            whether anything on disk changed.
        """
        # Again at the end: a killed run's last writer task may have renamed its shard
        # after this run's start-up sweep.
        self._remove_orphans()
        changed = False
        if self._commits or self.invalidated_files or not (self.root / MANIFEST).exists():
            self._write_manifest()
            changed = True
        if self._commits:
            self._close_journal()
            self._commits = 0
            self._clear_journal()
        changed |= self._write_rejects(rejects)
        return changed

    def all_rejects(self, current: list[Reject], present: set[str]) -> list[Reject]:
        """This run's discovery/probe rejects plus decode rejects of items still present."""
        rejects = list(current)
        for item_id in sorted(self.decode_rejects):
            if item_id in present:
                rejects += [Reject(**reject) for reject in self.decode_rejects[item_id]["rejects"]]
        return rejects

    def _write_manifest(self) -> None:
        manifest = {
            "kind": self.kind,
            "schema_version": SCHEMA_VERSION,
            "settings": self.settings,
            "shard_dir": SHARD_DIR,
            "totals": {
                "files": len(self.files),
                "rows": sum(entry["rows"] for entry in self.files.values()),
                "bytes": sum(entry["bytes"] for entry in self.files.values()),
                "audio_seconds": sum(entry["audio_seconds"] for entry in self.files.values()),
                "items": len(self.items),
            },
            "files": dict(sorted(self.files.items())),
            "items": {
                key: {"fingerprint": s.fingerprint, "segments_total": s.segments_total, "rows": s.rows}
                for key, s in sorted(self.items.items())
            },
            "decode_rejects": self.decode_rejects,
        }
        (self.root / MANIFEST).write_bytes(json.dumps(manifest, indent=1, sort_keys=True).encode())

    def _write_rejects(self, rejects: list[Reject]) -> bool:
        table = pa.table(
            {
                "path": [r.path for r in rejects],
                "reason": [r.reason for r in rejects],
                "pair_id": [r.pair_id for r in rejects],
                "stage": [r.stage for r in rejects],
            },
            schema=REJECT_SCHEMA,
        )
        stored = self._stored_rejects()
        if stored is not None and stored.equals(table):
            return False
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        (self.root / REJECTS).write_bytes(buffer.getvalue())
        return True

    def _stored_rejects(self) -> pa.Table | None:
        """The folder's ``rejects.parquet`` as the last run wrote it (None: none, or unreadable)."""
        try:
            return pq.read_table(io.BytesIO((self.root / REJECTS).read_bytes()))
        except (FileNotFoundError, pa.ArrowInvalid, OSError):
            return None

    def new_rejects(self, rejects: list[Reject]) -> int:
        """How many of ``rejects`` (path and reason) the folder's rejects table does not hold
        yet: all of them on a first run. Call before ``finish``, which rewrites the table."""
        stored = self._stored_rejects()
        known = set() if stored is None else set(zip(stored["path"].to_pylist(), stored["reason"].to_pylist()))
        return sum((reject.path, reject.reason) not in known for reject in rejects)

    def _close_journal(self) -> None:
        if self._journal_file is not None:
            self._journal_file.close()
            self._journal_file = None

    def close(self) -> None:
        self._close_journal()
        self._lock.release()

    def __enter__(self) -> "ShardStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reading ----------------------------------------------------------------

    def shard_paths(self) -> list[str]:
        return [str(self.shard_dir / name) for name in sorted(self.files)]


def read_manifest(out_dir: str | os.PathLike | Location) -> dict:
    root = Location.of(out_dir)
    try:
        return json.loads((root / MANIFEST).read_text())
    except FileNotFoundError:
        raise InputError(f"{root} has no {MANIFEST}: is it a jingle preprocess output?") from None


def shard_paths(out_dir: str | os.PathLike | Location) -> list[str]:
    """The committed shard files of an output folder (paths or URIs), from its manifest."""
    root = Location.of(out_dir)
    manifest = read_manifest(root)
    return [str(root / manifest["shard_dir"] / name) for name in sorted(manifest["files"])]
