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
    # Per request, in order: an HTTP status to answer, or "timeout" (answer too late).
    # When the script runs out, every request succeeds (200).
    script: list[int | str] = field(default_factory=list)
    attempts: int = 0
    accepted: list[dict[str, Any]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    def changes(self) -> list[tuple[str, str]]:
        return [(c["change"], c["customer_id"]) for body in self.accepted for c in body["changes"]]


@contextmanager
def webhook_receiver(timeout_delay_s: float = 1.5) -> Iterator[Receiver]:
    receiver = Receiver("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            receiver.attempts += 1
            action = receiver.script.pop(0) if receiver.script else 200
            if action == "timeout":
                time.sleep(timeout_delay_s)
                action = 200  # too late: the client has given up
            elif action == 200:
                receiver.accepted.append(json.loads(body))
                receiver.keys.append(self.headers["Idempotency-Key"])
            self.send_response(int(action))
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
        server.shutdown()
        server.server_close()
