"""Uvicorn in a thread of its own, stoppable, with the bound port known (port 0 allowed)."""

from __future__ import annotations

import logging
import threading
import time

import uvicorn
from fastapi import FastAPI

from appliance.config import WebConfig

logger = logging.getLogger(__name__)


class WebServer:
    """Owns the uvicorn server thread."""

    def __init__(self, app: FastAPI, config: WebConfig) -> None:
        self.config = config
        cert, key = config.tls_cert, config.tls_key  # both or neither (validated)
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=config.host,
                port=config.port,
                log_config=None,
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=3,
                server_header=False,  # do not advertise the server software
                ssl_certfile=str(cert) if cert is not None else None,
                ssl_keyfile=str(key) if key is not None else None,
            )
        )
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start serving; raise RuntimeError when the port cannot be bound."""
        self._thread = threading.Thread(target=self._server.run, name="web", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(
                    f"console could not listen on {self.config.host}:{self.config.port} "
                    "(port in use or address not available)"
                )
            time.sleep(0.02)
        sockets = [s for server in self._server.servers for s in server.sockets]
        self.port = sockets[0].getsockname()[1] if sockets else self.config.port
        scheme = "https" if self.config.tls_cert else "http"
        logger.info("console listening on %s://%s:%s", scheme, self.config.host, self.port)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, finish in-flight requests briefly, join."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """The server thread is running."""
        return bool(self._thread and self._thread.is_alive())

    def health(self) -> dict[str, object]:
        """Console state for /api/health."""
        return {"state": "ok" if self.alive else "error", "host": self.config.host, "port": self.port}
