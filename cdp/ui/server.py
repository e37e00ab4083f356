"""Serving the explorer: the bind-address check, then uvicorn on a thread.

Safe by default: the pages show personal data, so ``cdp ui`` binds a loopback
address unless ``ui.access_token`` is set; any other address without one is a
ConfigError before a socket is opened. uvicorn runs on a thread (as the collector's
does) so that the command's main thread keeps the signals and tests can start and
stop a real server in-process.
"""

from __future__ import annotations

import logging
from pathlib import Path

import uvicorn

from cdp.errors import ConfigError
from cdp.serving import ServerThread, bind
from cdp.settings import Settings
from cdp.ui.app import UiContext, create_app, templates
from cdp.ui.auth import is_loopback
from cdp.ui.segment_file import SegmentFile
from cdp.ui.snapshot import AnalystSnapshot

log = logging.getLogger(__name__)


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
            segments=SegmentFile(settings),
            snapshot=AnalystSnapshot(analyst, settings.ui.memory_limit),
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
        self._http = ServerThread(config, self._socket, "cdp-ui", "cdp ui")

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def error(self) -> BaseException | None:
        return self._http.error

    def start(self) -> None:
        self._http.start()

    @property
    def alive(self) -> bool:
        return self._http.alive

    def stop(self) -> None:
        self._http.stop()
