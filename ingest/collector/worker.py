"""One collector worker process: ``python -m cdp.ingest.collector.worker``.

Started by :class:`~cdp.ingest.collector.workers.CollectorWorkers`, which passes the
settings as JSON on stdin, ``collector.listen`` naming the port it holds for the
workers (each binds it too, with SO_REUSEPORT). It says ``ready`` on stdout once it
serves; SIGTERM (or SIGINT, which a terminal sends to the whole process group) makes
it finish the requests in progress, flush its producer and exit 0. It exits 1 if its
HTTP server stops by itself.
"""

from __future__ import annotations

import gc
import signal
import sys
import threading

from cdp.errors import CdpError
from cdp.ingest.collector.server import CollectorServer
from cdp.logs import configure_logging
from cdp.settings import Settings


def main() -> int:
    configure_logging(verbose=False)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    settings = Settings.model_validate_json(sys.stdin.buffer.read())
    try:
        server = CollectorServer(settings)
        server.start()
    except CdpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # What start-up allocated (modules, settings, the app) lives as long as the worker:
    # kept out of the garbage collector's scans, as the ingest validator's is.
    gc.freeze()
    sys.stdout.buffer.write(b"ready\n")
    sys.stdout.flush()
    while not stop.wait(0.5):
        if not server.alive:
            break
    server.stop()
    return 0 if stop.is_set() else 1


if __name__ == "__main__":
    sys.exit(main())
