"""The studio's app served by uvicorn in a thread of this process (``framecast studio``, and tests)."""

from __future__ import annotations

import socket
import threading
import time


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (0: a free port); raises OSError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    return sock


class RunningStudio:
    """``app`` served on ``host:port`` (0: a free port) until ``stop``; ``url`` is the page's address.
    Raises OSError when it cannot listen there, RuntimeError when the web server does not start."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        self.socket = listen(host, port)
        bound = self.socket.getsockname()
        self.url = f"http://{f'[{bound[0]}]' if ':' in bound[0] else bound[0]}:{bound[1]}/"
        config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, name="framecast-studio",
                                       daemon=True)  # fmt: skip
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not self.server.started:
            self.stop()
            raise RuntimeError("the studio's web server did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()
