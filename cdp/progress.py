"""Progress bars for long commands: one line on stderr, redrawn in place, and only
when stderr is a terminal — piped or logged output stays clean."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

_BAR_WIDTH = 24
_REDRAW_EVERY_S = 0.1


class Progress:
    """``update(done)`` as work advances; ``total`` gives a bar, without it a count."""

    def __init__(
        self, label: str, total: int | None = None, unit: str = "", stream: TextIO | None = None
    ) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream or sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self._started = time.monotonic()
        self._drawn_at = 0.0
        self._width = 0

    def update(self, done: int, detail: str = "") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        finished = self.total is not None and done >= self.total
        if now - self._drawn_at < _REDRAW_EVERY_S and not finished:
            return
        self._drawn_at = now
        elapsed = max(now - self._started, 1e-9)
        unit = f" {self.unit}" if self.unit else ""
        if self.total:
            fraction = min(done / self.total, 1.0)
            filled = int(fraction * _BAR_WIDTH)
            bar = "█" * filled + "░" * (_BAR_WIDTH - filled)
            text = f"{self.label} {bar} {fraction:4.0%} {done:,}/{self.total:,}{unit}"
        else:
            text = f"{self.label} {done:,}{unit} ({done / elapsed:,.0f}/s)"
        text += f"  {detail}" if detail else ""
        self._width = max(self._width, len(text))
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
