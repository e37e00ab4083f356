"""The scenario the export and destination tests share: a segments file with a
``files``, an ``ad_audience`` and a ``webhook`` destination for the segment
``recent``, a two-customer timeline, and helpers to build and export it.

The helpers keep the names they had in test_export.py, where they were private."""

from datetime import timedelta

from cdp.processing.activation.export import run_export
from cdp.processing.segmentation.config import load_segment_config
from cdp.processing.stages.run import run_build
from tests.processing.store import AS_OF, days_ago, event, order, settings, store

T2, T3, T4 = (AS_OF + timedelta(days=d) for d in (20, 45, 60))


def _config(webhook_url: str = "http://127.0.0.1:9/hook", consent: str = "none"):
    text = f"""
[destinations.files]
type = "files"

[destinations.audiences]
type = "ad_audience"
consent = "none"
default_country_code = "44"

[destinations.hook]
type = "webhook"
url = "{webhook_url}"
batch_size = 2
max_attempts = 3
backoff_s = 0.01
timeout_s = 0.5

[[segments]]
name = "recent"
rule = "last_order_at within 30 days"
destinations = ["files", "audiences", "hook"]
consent = "{consent}"
traits = ["orders"]
"""
    return load_segment_config(settings(), text)


def _timeline(con):
    """ann: member at t1 and t2, out at t3, back at t4; bob: enters t2, out at t3."""
    store(
        con,
        event(
            "identify",
            days_ago(60),
            user_id="ann",
            traits={
                "email": " Ann@Example.com ",
                "phone": "020 7946 0000",
                "consent": {"email": True},
            },
        ),
        event(
            "identify",
            days_ago(60),
            user_id="bob",
            traits={"email": "bob@example.com", "consent": {"email": False}},
        ),
        order("ann", days_ago(5), "10"),
        order("bob", AS_OF + timedelta(days=10), "10"),
        order("ann", AS_OF + timedelta(days=50), "10"),
    )


def _export(con, config, out, **kwargs):
    return {
        (r.destination, r.segment): r
        for r in run_export(con, settings(), config, out_dir=out, **kwargs).results
    }


def _first_export(con, tmp_path, destination: str, folder: str):
    """The timeline built as of AS_OF and exported to one destination: its folder."""
    _timeline(con)
    config = _config()
    run_build(con, settings(), AS_OF, config)
    _export(con, config, tmp_path, destinations=[destination])
    return tmp_path / folder / "recent" / AS_OF.date().isoformat()
