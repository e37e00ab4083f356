"""The collector as N worker processes sharing one listening socket.

The collector's work per event is Python (HTTP, JSON, kafka-python's producer), so
one process is bound to one core by the GIL: on a 2-core machine it reached ~0.4x
of a bare kafka-python producer's rate (benchmarks/collector_throughput.py).
``collector.workers`` processes, each with its own producer, listen on one port,
each with a socket of its own (SO_REUSEPORT), so the kernel spreads connections
evenly over them. This (parent) process binds the port first, without listening, to
hold it and to learn it when ``collector.listen`` asks for any free port.

Workers are started with ``python -m cdp.ingest.collector.worker``: a fresh
interpreter (never a fork of a process holding DuckDB and threads) that reads its
settings as JSON on stdin and says ``ready`` on stdout once it serves. Their
metrics go to files in a directory of this run (prometheus-client's multiprocess
mode), so any worker's ``/metrics`` and the parent's (``cdp run``'s shared one) add
up all of them. A worker that dies is a part that died: the caller stops the rest
and exits non-zero, as ``cdp run`` does for any part.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from cdp.errors import ServiceError
from cdp.ingest.collector.metrics import CollectorReport, WorkersCollector, report_of
from cdp.ingest.collector.server import check_sources
from cdp.serving import bind
from cdp.settings import Settings

READY = b"ready\n"
STARTUP_TIMEOUT_S = 60.0
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


class CollectorWorkers:
    """``collector.workers`` collector processes on one socket; start, then stop."""

    def __init__(self, settings: Settings) -> None:
        check_sources(settings)
        self._settings = settings
        self._socket = bind(settings.collector.listen, reuse_port=True, listening=False)
        host, port = self._socket.getsockname()[:2]
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._worker_settings = settings.model_copy(
            update={"collector": settings.collector.model_copy(update={"listen": self.address})}
        )
        self._metrics_dir = Path(tempfile.mkdtemp(prefix="cdp-collector-metrics-"))
        self._processes: list[subprocess.Popen[bytes]] = []

    def metrics_collector(self, registry: CollectorRegistry) -> WorkersCollector:
        """Register the workers' metrics, added up, in ``registry``."""
        return WorkersCollector(registry, path=str(self._metrics_dir))

    def report(self) -> CollectorReport:
        registry = CollectorRegistry()
        self.metrics_collector(registry)
        return report_of(registry)

    def start(self) -> None:
        settings_json = self._worker_settings.model_dump_json().encode()
        env = {**os.environ, METRICS_DIR_ENV: str(self._metrics_dir)}
        try:
            for _ in range(self._settings.collector.workers):
                process = subprocess.Popen(
                    [sys.executable, "-m", "cdp.ingest.collector.worker"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    env=env,
                )
                self._processes.append(process)
                assert process.stdin is not None
                process.stdin.write(settings_json)
                process.stdin.close()
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            for number, process in enumerate(self._processes):
                self._wait_ready(number, process, deadline)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, number: int, process: subprocess.Popen[bytes], deadline: float) -> None:
        assert process.stdout is not None
        while True:
            ready, _, _ = select.select([process.stdout], [], [], 0.2)
            if ready:
                line = process.stdout.readline()
                if line == READY:
                    return
                process.wait(timeout=30)
                raise ServiceError(
                    f"collector worker {number} did not start (exit status "
                    f"{process.returncode}); its error is in the log above"
                )
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"collector worker {number} did not start within {STARTUP_TIMEOUT_S:.0f} s"
                )

    def failure(self) -> str | None:
        """Why a worker is gone, if one is."""
        for number, process in enumerate(self._processes):
            if process.poll() is not None:
                return f"collector worker {number} exited with status {process.returncode}"
        return None

    def stop(self) -> None:
        """Each worker finishes its requests in progress and flushes its producer."""
        for process in self._processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        # A worker's last requests end by their deadline (uvicorn allows 5 s more), then
        # its producer flushes and closes, each bounded by 10 s.
        grace = self._settings.collector.delivery_timeout_s + 5 + 2 * 10 + 5
        for process in self._processes:
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
        with contextlib.suppress(OSError):
            self._socket.close()

    def remove_metrics(self) -> None:
        """Delete the workers' metric files (after the last report was read)."""
        shutil.rmtree(self._metrics_dir, ignore_errors=True)
