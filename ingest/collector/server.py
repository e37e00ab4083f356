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

import logging

import uvicorn
from prometheus_client import CollectorRegistry

from cdp.errors import ConfigError, ServiceError
from cdp.ingest.collector.app import create_app
from cdp.ingest.collector.delivery import KafkaDelivery
from cdp.ingest.collector.metrics import CollectorMetrics, WorkersCollector
from cdp.serving import ServerThread, bind
from cdp.settings import Settings

log = logging.getLogger(__name__)


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
        self._http = ServerThread(config, self._socket, "cdp-collector", "the collector")

    @property
    def error(self) -> BaseException | None:
        return self._http.error

    def start(self) -> None:
        try:
            self._http.start()
        except ServiceError:
            self.delivery.close()
            raise
        log.info("collecting events on http://%s/v1/batch", self.address)

    @property
    def alive(self) -> bool:
        return self._http.alive

    def stop(self) -> None:
        """Finish the requests in progress, send what is buffered, close."""
        self._http.stop()
        self.delivery.close()


def check_sources(settings: Settings) -> None:
    if not settings.collector.sources:
        raise ConfigError(
            "collector.sources: no source is configured, so no request could be "
            "accepted; add a [[collector.sources]] table with a name and a write_key"
        )
