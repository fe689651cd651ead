"""Where synced objects go: one small interface, a local/mounted directory, and the factory.

Targets offer `put`, `get`, `list` and `describe`. Keys are relative to the target's root (the
`s3://bucket/prefix` prefix, see `appliance.sync.s3`, or the `file:///dir` directory here).
Immutable objects (result batches, manifests, images) are written idempotently: a put of the
same bytes under the same key is skipped, so a retry after a crash never duplicates anything.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from appliance.config import SyncConfig
from appliance.sync.throttle import TokenBucket

logger = logging.getLogger(__name__)

MAX_GET_BYTES = 4 * 1024 * 1024


class TargetError(Exception):
    """A transfer failed (network, store, permissions); the worker retries with backoff."""


class KeyConflict(TargetError):
    """Our key already holds different data written by another store (node id reused?)."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One listed object: key (relative to the target root), etag and size."""

    key: str
    etag: str
    size: int


class Target(Protocol):
    """A place objects are written to and read back from."""

    def put(
        self, key: str, data: bytes, *, content_type: str, immutable: bool = True, retry: bool = False
    ) -> bool: ...
    def get(self, key: str) -> bytes: ...
    def list(self, prefix: str, start_after: str = "") -> Iterator[ObjectInfo]: ...
    def describe(self) -> str: ...


def sha256_hex(data: bytes) -> str:
    """Hex sha256."""
    return hashlib.sha256(data).hexdigest()


# --- directory --------------------------------------------------------------------------------


class FileTarget:
    """A local or mounted directory (the air-gapped export path); same layout as the bucket.

    The directory itself must exist (a missing mount must not fill the system disk instead).
    Files are written to a temporary name, fsynced and renamed, so a reader never sees half a
    file. An existing immutable file with other content is replaced: a directory has no object
    metadata to tell whose it was.
    """

    def __init__(self, config: SyncConfig, bucket_limiter: TokenBucket) -> None:
        url = urlparse(config.target)
        self.root = Path(unquote(url.netloc + url.path))
        if not self.root.is_absolute():
            raise ValueError(f"sync.target {config.target!r}: use file:///absolute/path")
        self.limiter = bucket_limiter

    def describe(self) -> str:
        """The directory."""
        return f"file://{self.root}"

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise TargetError(f"key {key!r} escapes the target directory")
        return path

    def _check_root(self) -> None:
        if not self.root.is_dir():
            raise TargetError(f"target directory {self.root} does not exist (not mounted?)")

    def put(
        self, key: str, data: bytes, *, content_type: str, immutable: bool = True, retry: bool = False
    ) -> bool:
        """Write atomically; False when an identical immutable file was already there."""
        self._check_root()
        path = self._path(key)
        try:
            if immutable and path.is_file() and sha256_hex(path.read_bytes()) == sha256_hex(data):
                return False
            path.parent.mkdir(parents=True, exist_ok=True)
            temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            with temp.open("wb") as f:
                view = memoryview(data)
                for start in range(0, len(data), self.limiter.chunk):
                    piece = view[start : start + self.limiter.chunk]
                    self.limiter.take(len(piece))
                    f.write(piece)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, path)
            _fsync_dir(path.parent)
        except OSError as exc:
            raise TargetError(f"write {path}: {exc.strerror or exc}") from exc
        return True

    def get(self, key: str) -> bytes:
        """The file's bytes."""
        self._check_root()
        path = self._path(key)
        try:
            if path.stat().st_size > MAX_GET_BYTES:
                raise TargetError(f"{key}: larger than {MAX_GET_BYTES} bytes")
            return path.read_bytes()
        except OSError as exc:
            raise TargetError(f"read {path}: {exc.strerror or exc}") from exc

    def list(self, prefix: str, start_after: str = "") -> Iterator[ObjectInfo]:
        """Files under `prefix` after `start_after`, in key order (temporary files skipped)."""
        self._check_root()
        base = self.root / prefix
        if not base.is_dir():
            return
        found = []
        for path in base.rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                stat = path.stat()
                key = path.relative_to(self.root).as_posix()
                if key <= start_after:
                    continue
                found.append(ObjectInfo(key, f"{stat.st_mtime_ns:x}-{stat.st_size:x}", stat.st_size))
        yield from sorted(found, key=lambda o: o.key)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_target(config: SyncConfig, store_id: str, limiter: TokenBucket) -> Target:
    """The target named by `config.target` (file:// or s3://)."""
    if config.target.startswith("s3://"):
        from appliance.sync.s3 import S3Target

        return S3Target(config, store_id, limiter)
    if config.target.startswith("file://"):
        return FileTarget(config, limiter)
    raise ValueError(f"sync.target {config.target!r}: expected file:///dir or s3://bucket/prefix")
