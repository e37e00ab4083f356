"""``cdp status``: lag, last build and exports, dead letters, sizes."""

from __future__ import annotations

import argparse

from cdp.settings import Settings
from cdp.status import format_status, gather_status


def status(args: argparse.Namespace, settings: Settings) -> int:
    print(format_status(gather_status(settings)))
    return 0
