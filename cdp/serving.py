"""HTTP servers of cdp (the collector's workers, the explorer): uvicorn on a thread of
its own, on a socket bound before it starts.

uvicorn runs on a thread so that signals stay the process's: its main thread calls
:meth:`ServerThread.stop`, which lets uvicorn stop accepting and finish the requests
in progress. The socket is bound first (:func:`bind`), so a port in use is a clear
error naming the setting rather than uvicorn exiting the process from its thread.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time

import uvicorn

from cdp.errors import ConfigError, ServiceError

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 30.0


class ServerThread:
    """``config``'s app served by uvicorn on ``sock`` in a daemon thread named
    ``name``; ``what`` names it in errors ("the collector", "cdp ui")."""

    def __init__(self, config: uvicorn.Config, sock: socket.socket, name: str, what: str) -> None:
        self._server = uvicorn.Server(config)
        self._socket = sock
        self._what = what
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self.error: BaseException | None = None

    def _serve(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as exc:  # SystemExit from uvicorn included
            self.error = exc
            log.error("%s's HTTP server stopped: %s", self._what, exc)

    def start(self) -> None:
        """Start serving; :class:`ServiceError` if uvicorn did not start in time."""
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ServiceError(f"{self._what} did not start: {self.error or 'timed out'}")
            time.sleep(0.02)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop accepting, let the requests in progress finish, close the socket."""
        self._server.should_exit = True
        self._thread.join()
        with contextlib.suppress(OSError):
            self._socket.close()


def bind(
    listen: str,
    *,
    reuse_port: bool = False,
    listening: bool = True,
    setting: str = "collector.listen",
) -> socket.socket:
    """A socket bound to ``listen`` (HOST:PORT; port 0 picks a free one).

    With ``reuse_port``, several processes bind one port each with a socket of its
    own (SO_REUSEPORT) and the kernel spreads new connections evenly over them: one
    shared socket would leave most keep-alive connections with whichever worker
    accepted first. A socket bound but not ``listening`` holds the port for the
    workers without taking connections itself. ``setting`` names the address's key
    in errors (``cdp ui`` binds through here too)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, int(port)))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"{setting}: cannot listen on {listen}: {exc.strerror or exc} "
            "(choose another address or port)"
        ) from None
    if listening:
        sock.listen(2048)
    return sock
