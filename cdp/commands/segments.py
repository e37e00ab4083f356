"""``cdp segments list``: every rule checked, the segments listed."""

from __future__ import annotations

import argparse

from cdp.processing.segmentation.config import load_segment_config
from cdp.settings import Settings


def list_segments(args: argparse.Namespace, settings: Settings) -> int:
    config = load_segment_config(settings)
    print(f"{len(config.segments)} segments from {config.source} (all rules valid)")
    for segment in config.segments:
        definition = segment.definition
        targets = ", ".join(definition.destinations) or "(no destination)"
        print(f"  {definition.name:<22} -> {targets}  [consent: {definition.consent}]")
        print(f"      {definition.rule}")
    return 0
