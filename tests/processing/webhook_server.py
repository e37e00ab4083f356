"""A real local HTTP server standing in for a webhook receiver, with scripted failures."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Receiver:
    url: str
    # Per request, in order: an HTTP status to answer; (status, {header: value}) to
    # answer with headers (e.g. Retry-After); "timeout" (answer too late); "lost" (take
    # the batch, then answer 500: the acknowledgement is lost); or "stall" (take the
    # batch, then hold the answer until ``release`` is set). When the script runs out,
    # every request succeeds (200).
    script: list[int | str | tuple[int, dict[str, str]]] = field(default_factory=list)
    attempts: int = 0
    attempt_times: list[float] = field(default_factory=list)  # time.monotonic() per request
    accepted: list[dict[str, Any]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # the Idempotency-Key of each accepted body
    release: threading.Event = field(default_factory=threading.Event)

    def changes(self) -> list[tuple[str, str]]:
        return [(c["change"], c["customer_id"]) for body in self.accepted for c in body["changes"]]

    def keys_by_change(self) -> dict[tuple[str, str], set[str]]:
        """Every key each change was delivered under."""
        keys: dict[tuple[str, str], set[str]] = {}
        for key, body in zip(self.keys, self.accepted, strict=True):
            for c in body["changes"]:
                keys.setdefault((c["change"], c["customer_id"]), set()).add(key)
        return keys


@contextmanager
def webhook_receiver(timeout_delay_s: float = 1.5) -> Iterator[Receiver]:
    receiver = Receiver("")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                receiver.attempts += 1
                receiver.attempt_times.append(time.monotonic())
                action = receiver.script.pop(0) if receiver.script else 200
            headers: dict[str, str] = {}
            if isinstance(action, tuple):
                action, headers = action
            if action == "timeout":
                time.sleep(timeout_delay_s)
                action = 200  # too late: the client has given up
            elif action in (200, "lost", "stall"):
                with lock:
                    receiver.accepted.append(json.loads(body))
                    receiver.keys.append(self.headers["Idempotency-Key"])
                if action == "stall":
                    receiver.release.wait()
                action = 500 if action == "lost" else 200
            self.send_response(int(action))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        server.shutdown()
        server.server_close()
