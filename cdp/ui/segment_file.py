"""The segments as configured, for the explorer: re-read when the file changes.

``cdp ui`` runs for weeks beside ``cdp run``. A segment added to the segments file
is built at the next refresh, and its page should not wait for a restart of the
explorer. The text is read again on each use (a few KB) and parsed again only when
it changed; a file that no longer parses (someone is editing it) keeps the last good
segments, with a warning once per such text.
"""

from __future__ import annotations

import logging
import threading

from cdp.errors import ConfigError
from cdp.processing.segmentation.config import SegmentConfig, load_segment_config, segments_file
from cdp.settings import Settings

log = logging.getLogger(__name__)


class SegmentFile:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._text = segments_file(settings)[1]
        self._config = load_segment_config(settings, self._text)  # at start: errors stop it
        self._refused: str | None = None

    def current(self) -> SegmentConfig:
        """The segments of the file as it is now, or as it last parsed."""
        try:
            source, text = segments_file(self._settings)
        except ConfigError as exc:  # gone or unreadable for a moment: keep what we have
            log.warning("cdp ui keeps the segments it has: %s", exc)
            return self._config
        with self._lock:
            if text != self._text and text != self._refused:
                try:
                    self._config = load_segment_config(self._settings, text)
                    self._text = text
                    log.info("cdp ui: re-read the segments from %s", source)
                except ConfigError as exc:
                    self._refused = text
                    log.warning("cdp ui keeps the segments it had: %s", exc)
            return self._config
