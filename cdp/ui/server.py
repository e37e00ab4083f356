"""Serving the explorer: the bind-address check, then uvicorn on a thread.

Safe by default: the pages show personal data, so ``cdp ui`` binds a loopback
address unless ``ui.access_token`` is set; any other address without one is a
ConfigError before a socket is opened. uvicorn runs on a thread (as the collector's
does) so that the command's main thread keeps the signals and tests can start and
stop a real server in-process.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path

import uvicorn

from cdp.errors import ConfigError, ServiceError
from cdp.ingest.collector.server import bind
from cdp.processing.segmentation.config import load_segment_config
from cdp.settings import Settings
from cdp.ui.app import UiContext, create_app, templates
from cdp.ui.auth import is_loopback
from cdp.ui.snapshot import AnalystSnapshot

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 30.0


def check_listen_safe(settings: Settings) -> None:
    host = settings.ui.listen.rpartition(":")[0]
    if not is_loopback(host) and not settings.ui.access_token:
        raise ConfigError(
            f"ui.listen: {settings.ui.listen} is reachable from other machines and the "
            "explorer shows personal data; set ui.access_token (at least 16 characters, "
            "e.g. CDP_UI__ACCESS_TOKEN=...) or listen on 127.0.0.1"
        )


class UiServer:
    """The explorer on ``ui.listen``: :meth:`start`, then :meth:`stop`."""

    def __init__(self, settings: Settings, analyst: Path, report: Path) -> None:
        check_listen_safe(settings)
        context = UiContext(
            settings=settings,
            segments=load_segment_config(settings),
            snapshot=AnalystSnapshot(analyst),
            report=report,
            templates=templates(),
        )
        self.snapshot = context.snapshot
        self._socket = bind(settings.ui.listen, setting="ui.listen")
        host, port = self._socket.getsockname()[:2]
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        config = uvicorn.Config(
            create_app(context),
            loop="uvloop",
            http="httptools",
            lifespan="off",
            access_log=False,
            log_config=None,
            server_header=False,
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, name="cdp-ui", daemon=True)
        self.error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def _serve(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as exc:  # SystemExit from uvicorn included
            self.error = exc
            log.error("the explorer's HTTP server stopped: %s", exc)

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ServiceError(f"cdp ui did not start: {self.error or 'timed out'}")
            time.sleep(0.02)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join()
        with contextlib.suppress(OSError):
            self._socket.close()
