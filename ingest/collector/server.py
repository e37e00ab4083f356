"""One collector worker's server: uvicorn (uvloop + httptools) on a thread of its own.

Each worker process (``cdp.ingest.collector.worker``) runs one
:class:`CollectorServer`. uvicorn runs on a thread so that signals stay the worker's:
on SIGTERM the worker's main thread calls :meth:`CollectorServer.stop`, which lets
uvicorn stop accepting, waits for the requests in progress (each ends when Kafka
acknowledged its events or its deadline passed), then flushes the producer. The
socket is bound here, before uvicorn starts, so a port in use is a clear error
rather than uvicorn exiting the process from its thread.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time

import uvicorn
from prometheus_client import CollectorRegistry

from cdp.errors import ConfigError, ServiceError
from cdp.ingest.collector.app import create_app
from cdp.ingest.collector.delivery import KafkaDelivery
from cdp.ingest.collector.metrics import CollectorMetrics, WorkersCollector
from cdp.settings import Settings

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 30.0


class CollectorServer:
    """The HTTP collector and its producer; :meth:`start` then :meth:`stop`."""

    def __init__(self, settings: Settings) -> None:
        """Serve on ``collector.listen``, sharing the port with the other workers
        (SO_REUSEPORT). Metrics go to the directory in ``PROMETHEUS_MULTIPROC_DIR``,
        and ``/metrics`` adds up every worker's."""
        collector = settings.collector
        check_sources(settings)
        self.metrics = CollectorMetrics(CollectorRegistry())
        shown = CollectorRegistry()
        WorkersCollector(shown)
        self._socket = bind(collector.listen, reuse_port=True)
        host, port = self._socket.getsockname()[:2]
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            self.delivery = KafkaDelivery(settings, self.metrics)
        except BaseException:
            self._socket.close()
            raise
        app = create_app(settings, self.delivery, self.metrics, shown)
        config = uvicorn.Config(
            app,
            loop="uvloop",
            http="httptools",
            lifespan="off",
            access_log=False,
            log_config=None,
            limit_concurrency=collector.max_connections,
            # Requests in progress end by their own deadline; this is the backstop.
            timeout_graceful_shutdown=int(collector.delivery_timeout_s) + 5,
            server_header=False,
            date_header=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, name="cdp-collector", daemon=True)
        self.error: BaseException | None = None

    def _serve(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as exc:  # SystemExit from uvicorn included
            self.error = exc
            log.error("the collector's HTTP server stopped: %s", exc)

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.delivery.close()
                raise ServiceError(f"the collector did not start: {self.error or 'timed out'}")
            time.sleep(0.02)
        log.info("collecting events on http://%s/v1/batch", self.address)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Finish the requests in progress, send what is buffered, close."""
        self._server.should_exit = True
        self._thread.join()
        self.delivery.close()
        with contextlib.suppress(OSError):
            self._socket.close()


def check_sources(settings: Settings) -> None:
    if not settings.collector.sources:
        raise ConfigError(
            "collector.sources: no source is configured, so no request could be "
            "accepted; add a [[collector.sources]] table with a name and a write_key"
        )


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
