"""A fake IP camera: an HTTP server streaming MJPEG (multipart/x-mixed-replace) on loopback.

It can be stopped and started again on the same port, to exercise reconnects.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

from hardware.fakes.ports import free_port

BOUNDARY = "frame"


class MjpegCamera:
    """Serves `render(n)` frames at `fps` to every client of http://127.0.0.1:port/stream.mjpg."""

    def __init__(
        self, render: Callable[[int], np.ndarray], fps: float = 20.0, port: int | None = None
    ) -> None:
        self.render = render
        self.fps = fps
        self.port = port or free_port()
        self.frames_sent = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def url(self) -> str:
        """The stream URL."""
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def start(self) -> None:
        """Listen and serve in a background thread."""
        camera = self
        self._stop.clear()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server naming
                if self.path != "/stream.mjpg":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.end_headers()
                n = 0
                try:
                    while not camera._stop.is_set():
                        ok, jpeg = cv2.imencode(".jpg", camera.render(n))
                        data = jpeg.tobytes()
                        self.wfile.write(
                            f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                            f"Content-Length: {len(data)}\r\n\r\n".encode()
                            + data
                            + b"\r\n"
                        )
                        camera.frames_sent += 1
                        n += 1
                        time.sleep(1.0 / camera.fps)
                except (BrokenPipeError, ConnectionResetError):
                    return

            def log_message(self, *args: object) -> None:
                """Quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-mjpeg", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and drop every client connection."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
