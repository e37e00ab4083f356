"""A real `cdp collect` process for the collector's tests, and ways to read what it stored.

``collector_factory(sources=..., **collector_settings)`` writes the test's config (its own
topics, group and database from ``isolated_config``) with a ``[collector]`` section,
creates the topics, starts ``python -m cdp collect`` on a free port, waits for
``/healthz`` and stops it with SIGTERM at the end of the test, checking it exits 0.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cdp.ingest.broker import free_port
from cdp.ingest.topics import create_topics as make_topics
from cdp.settings import Settings, load_settings

WEB_KEY = "wk_test_web_0001"
SERVER_KEY = "wk_test_server_0002"
DEFAULT_SOURCES: list[dict[str, Any]] = [
    {"name": "web", "write_key": WEB_KEY, "allowed_origins": ["http://shop.test"]},
    {"name": "backend", "write_key": SERVER_KEY},
]


@dataclass
class RunningCollector:
    url: str  # http://127.0.0.1:PORT
    config_path: Path
    settings: Settings
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ingest(self) -> subprocess.CompletedProcess:
        """`cdp ingest --until-idle` over this collector's topics into its database."""
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "cdp",
                "--config",
                str(self.config_path),
                "ingest",
                "--until-idle",
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def _toml_value(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def collector_section(sources: list[dict[str, Any]], **settings: Any) -> str:
    lines = ["", "[collector]", *(f"{k} = {_toml_value(v)}" for k, v in settings.items())]
    for source in sources:
        lines += ["", "[[collector.sources]]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in source.items()]
    return "\n".join(lines) + "\n"


def wait_until_healthy(url: str, process: subprocess.Popen, log: Path, timeout_s: float = 30):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"cdp collect exited {process.returncode}: {log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"cdp collect did not answer /healthz within {timeout_s} s")


@pytest.fixture
def collector_factory(
    isolated_config: Path, tmp_path: Path
) -> Iterator[Callable[..., RunningCollector]]:
    started: list[RunningCollector] = []

    def start(
        sources: list[dict[str, Any]] | None = None,
        *,
        config_text: str | None = None,
        create_topics: bool = True,
        **collector_settings: Any,
    ) -> RunningCollector:
        base = config_text if config_text is not None else isolated_config.read_text()
        path = tmp_path / f"collector-{len(started)}.toml"
        path.write_text(
            base
            + collector_section(
                DEFAULT_SOURCES if sources is None else sources, **collector_settings
            )
        )
        settings = load_settings(path)
        if create_topics:
            make_topics(settings)
        port = free_port()
        log = tmp_path / f"collector-{len(started)}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cdp",
                "--config",
                str(path),
                "collect",
                "--listen",
                f"127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
            env=env,
        )
        running = RunningCollector(f"http://127.0.0.1:{port}", path, settings, process, log)
        started.append(running)
        wait_until_healthy(running.url, process, log)
        return running

    yield start
    for running in started:
        code = running.stop()
        assert code == 0, f"cdp collect exited {code} on SIGTERM: {running.log()[-3000:]}"
