"""Where jingle reads and writes: a local folder or an ``s3://`` / ``gs://`` URI.

Every path a user gives (``--out``, ``--data``, ``--storage``, ``--checkpoint``) becomes a
``Location``: a pyarrow filesystem and a path in it. Object stores are reached with
pyarrow's own S3 and GCS filesystems and their usual configuration: credentials from the
environment, ``~/.aws/credentials`` or the machine's role, ``AWS_ENDPOINT_URL`` for an
S3-compatible server (MinIO, moto; pyarrow and boto3 both read it), ``AWS_REGION``. A Ray
job's workers get the endpoint and region from the driver, never its credentials: every node
has its own (``STORAGE_SETTINGS``, ``NODE_CREDENTIALS``; docs/security.md).

Ray Train and Tune are given the filesystem and the path without its scheme
(``RunConfig(storage_path=location.path, storage_filesystem=location.fs)``).

An object store has no rename and no append: a ``write_bytes`` there is one PUT, which
readers see whole or not at all, so the local temporary-file-and-rename is not needed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterator

REMOTE_SCHEMES = ("s3", "gs", "gcs")

# Settings a job's Ray workers need to reach the same storage as its driver: Ray workers
# inherit the environment of their node's raylet, not of the command that started the job,
# so ``init_ray`` hands these on (only those that are set). None of them is a secret:
# ``runtime_env`` is not a secret channel (every worker started for it carries it in its
# command line, the session's runtime_env_agent.log records it, the Jobs API returns it).
STORAGE_SETTINGS = (
    "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_EC2_METADATA_DISABLED",
    "MLFLOW_S3_ENDPOINT_URL",
)
# What a node brings itself and ``init_ray`` never passes on: the credentials (from the
# instance role, the node's environment or its ~/.aws/credentials, see docs/security.md),
# and the names of files on the driver's machine, which need not exist on the nodes.
NODE_CREDENTIALS = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE", "AWS_CA_BUNDLE", "GOOGLE_APPLICATION_CREDENTIALS",
)


class StorageError(Exception):
    """A location that cannot be used: a bucket that does not exist or refuses access."""


def is_remote(path: str | os.PathLike) -> bool:
    scheme, separator, _ = str(path).partition("://")
    return bool(separator) and scheme.lower() in REMOTE_SCHEMES


def storage_environment() -> dict[str, str]:
    """The storage settings of this process that a job's workers need (no credentials)."""
    return {key: os.environ[key] for key in STORAGE_SETTINGS if os.environ.get(key)}


@dataclass(frozen=True)
class Location:
    """A folder or file, local or in an object store.

    Attributes:
        uri: an absolute local path, or ``s3://bucket/key`` / ``gs://bucket/key``.
    """

    uri: str

    @classmethod
    def of(cls, path: "str | os.PathLike | Location") -> "Location":
        if isinstance(path, Location):
            return path
        text = str(path)
        if str(path).startswith("file://"):
            text = text[len("file://"):]
        if not is_remote(text):
            return cls(str(Path(text).expanduser().resolve()))
        if "?" in text:
            raise StorageError(f"{text}: options in the URI are not supported; set AWS_ENDPOINT_URL, AWS_REGION... instead")
        scheme, _, rest = text.partition("://")
        scheme = "gs" if scheme.lower() in ("gs", "gcs") else scheme.lower()
        rest = rest.strip("/")
        if not rest:
            raise StorageError(f"{text}: a bucket is needed (s3://BUCKET/prefix)")
        return cls(f"{scheme}://{rest}")

    @property
    def is_local(self) -> bool:
        return not is_remote(self.uri)

    @property
    def bucket(self) -> str:
        return "" if self.is_local else self.uri.split("://", 1)[1].split("/", 1)[0]

    @cached_property
    def _resolved(self):
        import pyarrow.fs

        if self.is_local:
            return pyarrow.fs.LocalFileSystem(), self.uri
        try:
            return pyarrow.fs.FileSystem.from_uri(self.uri)
        except (OSError, ValueError) as error:
            raise StorageError(f"{self.uri}: {error}") from None

    @property
    def fs(self):
        """The pyarrow filesystem (picklable: Ray ships it to workers)."""
        return self._resolved[0]

    @property
    def path(self) -> str:
        """The path inside ``fs``: ``bucket/key`` for an object store, no scheme."""
        return self._resolved[1]

    def __truediv__(self, name: str) -> "Location":
        return Location(f"{self.uri.rstrip('/')}/{name}")

    @property
    def name(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1]

    def __str__(self) -> str:
        return self.uri

    # -- reading ------------------------------------------------------------------

    def _info(self):
        try:
            return self.fs.get_file_info(self.path)
        except OSError as error:
            raise StorageError(f"{self.uri}: {error}") from None

    def exists(self) -> bool:
        import pyarrow.fs

        return self._info().type != pyarrow.fs.FileType.NotFound

    def is_dir(self) -> bool:
        import pyarrow.fs

        return self._info().type == pyarrow.fs.FileType.Directory

    def size(self) -> int:
        return self._info().size or 0

    def read_bytes(self) -> bytes:
        try:
            with self.fs.open_input_stream(self.path) as stream:
                return stream.read()
        except FileNotFoundError:
            raise
        except OSError as error:
            if "not exist" in str(error) or "NoSuchKey" in str(error) or "NO_SUCH_KEY" in str(error):
                raise FileNotFoundError(self.uri) from None
            raise StorageError(f"{self.uri}: {error}") from None

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def list(self) -> list["Location"]:
        """What is directly inside this folder (nothing when it does not exist)."""
        import pyarrow.fs

        try:
            infos = self.fs.get_file_info(pyarrow.fs.FileSelector(self.path, allow_not_found=True))
        except OSError as error:
            raise StorageError(f"{self.uri}: {error}") from None
        return [self / info.base_name for info in sorted(infos, key=lambda info: info.path)]

    # -- writing ------------------------------------------------------------------

    def mkdir(self) -> None:
        try:
            self.fs.create_dir(self.path, recursive=True)
        except OSError as error:
            raise StorageError(f"{self.uri}: cannot create ({error})") from None

    def write_bytes(self, data: bytes) -> None:
        """Write a whole file: readers see the old one or the new one, never a part."""
        if self.is_local:
            path = Path(self.uri)
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
            try:
                with open(temporary, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temporary, path)
            except BaseException as error:  # a full disk, Ctrl-C...: leave no temporary file behind
                with contextlib.suppress(OSError):
                    temporary.unlink()
                if isinstance(error, OSError) and error.errno is not None:
                    # name the file the user knows (write() and fsync() name none; open() the temporary)
                    raise OSError(error.errno, error.strerror, str(path)) from error
                raise
            return
        try:
            with self.fs.open_output_stream(self.path) as stream:
                stream.write(data)
        except OSError as error:
            raise StorageError(f"{self.uri}: cannot write ({error})") from None

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode())

    def delete(self) -> None:
        """Remove a file (nothing when it is already gone)."""
        try:
            self.fs.delete_file(self.path)
        except FileNotFoundError:
            pass
        except OSError as error:
            if self.exists():
                raise StorageError(f"{self.uri}: cannot delete ({error})") from None


# ------------------------------------------------------------------ Ray Train and Tune


def ray_storage(location: Location) -> dict[str, object]:
    """``RunConfig``'s storage arguments: a bucket as its filesystem and its path without
    the scheme (what Ray Train and Tune take), a local folder as its path."""
    if location.is_local:
        return {"storage_path": location.uri}
    return {"storage_path": location.path, "storage_filesystem": location.fs}


def checkpoint_uri(path: str, storage: Location) -> str:
    """A path Ray gives in ``storage``'s filesystem (a checkpoint's), as users name it:
    ``s3://bucket/...`` in a bucket, unchanged when local or already a URI."""
    if storage.is_local or "://" in path:
        return path
    return f"{storage.uri.split('://', 1)[0]}://{path.lstrip('/')}"


def check_writable(location: Location, flag: str) -> None:
    """Refuse, in one line, a local folder this process cannot write (a read-only file system,
    no permission), or a bucket that does not exist or refuses access (before any work)."""
    if location.is_local:
        _check_local_writable(Path(location.uri), flag)
        return
    probe = location / f".jingle-probe-{uuid.uuid4().hex}"
    try:
        probe.write_bytes(b"")
        probe.delete()
    except StorageError as error:
        reason = str(error)
        if "NO_SUCH_BUCKET" in reason or "does not exist" in reason:
            reason = f"bucket {location.bucket!r} does not exist"
        elif "ACCESS_DENIED" in reason or "AccessDenied" in reason or "Forbidden" in reason or "403" in reason:
            reason = f"access to bucket {location.bucket!r} is refused (check the credentials)"
        raise StorageError(f"{flag} {location.uri}: {reason}") from None


def _check_local_writable(path: Path, flag: str) -> None:
    """Refuse ``path`` when the folder it is in, or will be made in, cannot be written.

    Nothing is created: ``os.access`` asks the kernel, which answers for this process (a
    read-only mount refuses even root; permission bits do not stop root, who can write).
    """
    existing = path
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():  # a file given as a folder: the command's own checks name it
        return
    if os.access(existing, os.W_OK | os.X_OK):
        return
    reason = "is on a read-only file system" if os.statvfs(existing).f_flag & os.ST_RDONLY else "is not writable by this user"
    where = reason if existing == path else f"cannot be created: {existing} {reason}"
    raise StorageError(f"{flag} {path}: {where} (give a folder this user can write)")


def check_readable(location: Location, flag: str) -> None:
    """Refuse, in one line, a location whose bucket is missing or refuses access."""
    if location.is_local:
        return
    try:
        location.exists()
    except StorageError as error:
        reason = str(error)
        if "ACCESS_DENIED" in reason or "AccessDenied" in reason or "Forbidden" in reason or "403" in reason:
            reason = f"access to bucket {location.bucket!r} is refused (check the credentials)"
        raise StorageError(f"{flag} {location.uri}: {reason}") from None


@contextlib.contextmanager
def staged(location: Location) -> Iterator[Path]:
    """A local folder to write ``location``'s files in: the folder itself when local; for
    a bucket, a temporary folder whose files are uploaded when the block ends without an
    error."""
    if location.is_local:
        Path(location.uri).mkdir(parents=True, exist_ok=True)
        yield Path(location.uri)
        return
    with tempfile.TemporaryDirectory(prefix="jingle-") as folder:
        yield Path(folder)
        upload_files(Path(folder), location)


def upload_files(folder: Path, location: Location, *, remove: bool = False) -> None:
    """Copy every file under a local folder to the same place under ``location``
    (``remove``: delete each local copy once it is uploaded)."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            (location / path.relative_to(folder).as_posix()).write_bytes(path.read_bytes())
            if remove:
                path.unlink()
