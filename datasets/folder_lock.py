"""One preprocessing run at a time per output folder: ``FolderLock`` (``OUT/.lock``), held
by ``datasets/shards.py``'s store; that module's docstring says how it works on a local disk
and in an object store, and when a lock is taken over."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time

from jingle.core.storage import Location, StorageError
from jingle.datasets.pairs import InputError

LOCK = ".lock"
LOCK_HEARTBEAT_S = 30.0
LOCK_STALE_S = 300.0
BUSY_POLL_S = 2.0


class FolderBusy(InputError):
    """Another run holds the output folder (and this one was told not to wait)."""


class FolderLock:
    """One run at a time per output folder (see the module's docstring).

    Args:
        root: the output folder.
        wait: wait for a running holder to finish instead of raising ``FolderBusy``.
    """

    def __init__(self, root: Location, *, wait: bool = False) -> None:
        self.location = root / LOCK
        self.took_over: dict | None = None  # what a stale lock said, when one was taken over
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(), "heartbeat": time.time()}
        self._handle = None
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        while not self._try_acquire():
            if not wait:
                holder = self.holder_line()
                raise FolderBusy(f"--out {root} is being written by another jingle run{holder}; "
                                 f"rerun with --if-busy wait to wait for it")
            time.sleep(BUSY_POLL_S)

    def holder_line(self) -> str:
        try:
            holder = json.loads(self.location.read_text())
            return f" (pid {holder['pid']} on {holder['host']}, since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder['started']))})"
        except (FileNotFoundError, StorageError, ValueError, KeyError):
            return ""

    def _try_acquire(self) -> bool:
        if self.location.is_local:
            return self._try_flock()
        try:
            held = json.loads(self.location.read_text())
        except FileNotFoundError:
            held = None
        except ValueError:
            held = None  # a torn or foreign object: nobody can be holding it through that
        if held is not None and not _stale(held):
            return False
        self.took_over = held
        self.location.write_text(json.dumps(self.owner))
        self._heartbeat = threading.Thread(target=self._beat, name="jingle-lock-heartbeat", daemon=True)
        self._heartbeat.start()
        return True

    def _try_flock(self) -> bool:
        path = self.location.uri
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        handle.seek(0)
        try:
            earlier = json.loads(handle.read() or "null")
        except ValueError:
            earlier = None
        # The kernel dropped the previous holder's flock with its process: a lock file
        # that still names a process means that run did not end by itself.
        self.took_over = earlier if isinstance(earlier, dict) else None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(self.owner))
        handle.flush()
        self._handle = handle
        return True

    def _beat(self) -> None:
        while not self._stop.wait(LOCK_HEARTBEAT_S):
            self.owner["heartbeat"] = time.time()
            try:
                self.location.write_text(json.dumps(self.owner))
            except StorageError:
                pass  # the next beat tries again; the run itself fails on its own writes

    def release(self) -> None:
        self._stop.set()
        if self._handle is not None:
            self._handle.seek(0)
            self._handle.truncate()  # an empty lock file: this run ended by itself
            self._handle.close()
            self._handle = None
        elif self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
            self.location.delete()
            self._heartbeat = None


def _stale(held: dict) -> bool:
    """Whether an object-store lock's run is gone."""
    if held.get("host") == socket.gethostname():
        try:
            os.kill(int(held["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, KeyError, ValueError, TypeError):
            pass
    return time.time() - float(held.get("heartbeat", 0)) > LOCK_STALE_S
