"""The collector app's own helpers: throttled problem logs, masked write keys."""

from __future__ import annotations

import logging
import time

from cdp.ingest.collector.app import ThrottledLog, masked


def test_a_repeated_problem_is_logged_once_per_interval_then_with_the_count_left_out(caplog):
    throttled = ThrottledLog(every_s=0.2)
    with caplog.at_level(logging.WARNING, logger="cdp.ingest.collector.app"):
        for _ in range(5):
            throttled.warn("401 unauthorized", "answered 401: %s", "unknown write key")
        throttled.warn("503 unavailable", "answered 503")
        time.sleep(0.25)
        throttled.warn("401 unauthorized", "answered 401: %s", "unknown write key")
    assert [record.getMessage() for record in caplog.records] == [
        "answered 401: unknown write key",
        "answered 503",
        "answered 401: unknown write key (and 4 more like it in the last 0 s)",
    ]


def test_write_keys_are_shown_by_their_first_four_characters_only():
    assert masked("wk_live_5f2c9a1e") == "wk_l…"
    assert masked("shortkey") == "…"
