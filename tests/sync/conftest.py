"""Fixtures for sync tests: a real S3 API (moto in server mode) on loopback, and a TCP proxy
in front of it that a test can cut to simulate an uplink outage without losing the bucket."""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("moto.server", reason="sync tests need moto[server] (the dev extra)")
import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402

from appliance.config import StoreConfig  # noqa: E402
from appliance.results import Verdict  # noqa: E402
from appliance.store.writer import StoreWriter  # noqa: E402
from tests.sync.support import flush, make_verdict  # noqa: E402

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """One moto S3 server for the session, on a free loopback port."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials in the environment (boto3's default chain reads them)."""
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def client_for(endpoint: str) -> Any:
    """A plain boto3 client for checking what landed."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


@dataclass
class Bucket:
    """A fresh bucket on the moto server and helpers to read it back."""

    name: str
    endpoint: str
    client: Any

    def list_keys(self, prefix: str = "") -> list[str]:
        """Every key under `prefix`, sorted."""
        out: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix):
            out.extend(item["Key"] for item in page.get("Contents", []))
        return sorted(out)

    def get(self, key: str) -> bytes:
        """An object's bytes."""
        return bytes(self.client.get_object(Bucket=self.name, Key=key)["Body"].read())

    def result_seqs(self, prefix: str = "") -> list[list[int]]:
        """The seqs in each results object, in key order."""
        return [
            [json.loads(line)["seq"] for line in gzip.decompress(self.get(key)).splitlines()]
            for key in self.list_keys(prefix)
            if "/results/" in key and key.endswith(".jsonl.gz")
        ]


@pytest.fixture
def bucket(moto_endpoint: str) -> Bucket:
    """A new, empty bucket per test."""
    client = client_for(moto_endpoint)
    name = f"test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return Bucket(name, moto_endpoint, client)


class Proxy:
    """A loopback TCP forwarder; `down()` refuses and cuts connections, `up()` restores them."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.connections = 0
        self.sent: list[tuple[float, int]] = []  # (when, bytes) client -> server

    @property
    def endpoint(self) -> str:
        """URL to give the code under test."""
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        """Listen (again) on the same port."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        thread.start()
        self._threads.append(thread)

    def down(self) -> None:
        """Stop listening and reset every open connection."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            doomed, self._sockets = self._sockets, set()
        for sock in doomed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # the pumps see it and close their sockets

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            self.connections += 1
            with self._lock:
                self._sockets |= {client, upstream}
            for a, b, upload in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(a, b, upload), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upload: bool) -> None:
        try:
            while data := src.recv(65536):
                if upload:
                    self.sent.append((time.monotonic(), len(data)))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._sockets.discard(src)
            src.close()  # each socket is the source of exactly one pump


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[Proxy]:
    """A proxy in front of the moto server, up."""
    host, port = moto_endpoint.removeprefix("http://").split(":")
    forwarder = Proxy((host, int(port)))
    forwarder.up()
    yield forwarder
    forwarder.down()


# --- the store and results ----------------------------------------------------------------------


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[StoreWriter]:
    """A running StoreWriter on tmp_path/state/appliance.db (the make_settings location)."""
    store = StoreWriter(tmp_path / "state" / "appliance.db", "test-node", StoreConfig(batch_max_ms=0))
    store.start()
    yield store
    store.stop()


@pytest.fixture
def fill(writer: StoreWriter) -> Callable[..., list[Verdict]]:
    """Commit `n` verdicts (part ids p0001...) and return them."""

    def put(n: int, start: int = 0, **kwargs: Any) -> list[Verdict]:
        made = [make_verdict(f"p{i:04d}", **kwargs) for i in range(start, start + n)]
        for v in made:
            writer.put(v)
        flush(writer)
        return made

    return put
