"""The segments as configured, for the explorer: re-read when the file changes.

``cdp ui`` runs for weeks beside ``cdp run``. A segment added to the segments file
is built at the next refresh, and its page should not wait for a restart of the
explorer. The file is stat-ed on each use and read and parsed again only when its
modification time or size changed (the shipped file never changes); a file that no
longer parses (someone is editing it) keeps the last good segments, with a warning.
"""

from __future__ import annotations

import logging
import os
import threading

from cdp.errors import ConfigError
from cdp.processing.segmentation.config import SegmentConfig, load_segment_config
from cdp.settings import Settings

log = logging.getLogger(__name__)


class SegmentFile:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._config = load_segment_config(settings)  # at start: an error stops cdp ui

    def _stat(self) -> tuple[int, int] | None:
        """(mtime, size) of the configured file; None for the shipped one or a file
        gone for a moment (then the segments in hand stay)."""
        if not self._settings.segments.file:
            return None
        try:
            stat = os.stat(self._settings.segments.file)
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def current(self) -> SegmentConfig:
        """The segments of the file as it is now, or as it last parsed."""
        stamp = self._stat()
        with self._lock:
            if stamp is not None and stamp != self._stamp:
                self._stamp = stamp  # a file that does not parse is not read again
                try:
                    self._config = load_segment_config(self._settings)
                    log.info("cdp ui: re-read the segments from %s", self._settings.segments.file)
                except ConfigError as exc:
                    log.warning("cdp ui keeps the segments it had: %s", exc)
            return self._config
