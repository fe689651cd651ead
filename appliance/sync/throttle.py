"""Network and CPU manners: the upload bandwidth cap, and background threads that yield.

The cap applies to payload bytes (object bodies), not to HTTP headers or TLS framing: it is a
budget for the plant's uplink over seconds, not a packet shaper. Bodies are read in chunks of
about a tenth of a second's worth, so the link sees a steady stream instead of bursts.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time

logger = logging.getLogger(__name__)


class TokenBucket:
    """`rate` bytes per second on average (0 = unlimited); waits are cut short by `stop`."""

    def __init__(self, rate: int, stop: threading.Event | None = None) -> None:
        self.rate = rate
        self.stop = stop or threading.Event()
        self.chunk = max(1024, min(256 * 1024, rate // 10)) if rate > 0 else 256 * 1024
        self._lock = threading.Lock()
        self._balance = 0.0  # starts empty: the average holds from the first byte
        self._last = time.monotonic()
        self.bytes_sent = 0
        self.last_take = time.monotonic()  # liveness while a long, capped upload runs

    def take(self, n: int) -> None:
        """Account for `n` bytes about to be sent; sleep until the average allows them."""
        with self._lock:
            self.bytes_sent += n
            self.last_take = time.monotonic()
            if self.rate <= 0:
                return
            now = time.monotonic()
            # Idle time earns credit, but no more than one chunk (so no burst after a pause).
            self._balance = min(float(self.chunk), self._balance + (now - self._last) * self.rate)
            self._last = now
            self._balance -= n
            wait = -self._balance / self.rate if self._balance < 0 else 0.0
        if wait > 0:
            # On stop, finish the object at full speed: the service is waiting to exit.
            self.stop.wait(wait)


class ThrottledBody(io.RawIOBase):
    """A seekable, read-only view of `data` whose reads draw on a TokenBucket."""

    def __init__(self, data: bytes, bucket: TokenBucket) -> None:
        super().__init__()
        self._data = memoryview(data)
        self._bucket = bucket
        self._pos = 0

    def readable(self) -> bool:
        """Always."""
        return True

    def seekable(self) -> bool:
        """Always (botocore rewinds a body to retry it)."""
        return True

    def __len__(self) -> int:
        return len(self._data)

    def tell(self) -> int:
        """Current position."""
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move within the data."""
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._data)}[whence]
        self._pos = max(0, min(len(self._data), base + offset))
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        """At most one chunk, after the bucket allows it."""
        if size is None or size < 0:
            size = self._bucket.chunk
        size = min(size, self._bucket.chunk, len(self._data) - self._pos)
        if size <= 0:
            return b""
        piece = bytes(self._data[self._pos : self._pos + size])
        self._bucket.take(len(piece))
        self._pos += len(piece)
        return piece

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        """io.RawIOBase protocol."""
        # (typeshed accepts any writable buffer; callers here pass bytearray or memoryview)
        piece = self.read(len(buffer))
        buffer[: len(piece)] = piece
        return len(piece)


def lower_priority(niceness: int = 10) -> None:
    """Make the calling thread yield the CPU to inspection (Linux: per-thread nice)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (AttributeError, OSError) as exc:  # not Linux, or not allowed: run as we are
        logger.debug("cannot lower thread priority: %s", exc)
