"""A build as the service runs it: what ``builds`` records when the analyst publish
fails or a process died mid-build, and what a killed publish leaves behind."""

from collections.abc import Iterator
from datetime import timedelta

import duckdb
import pytest

from cdp.processing.activation.export import run_export
from cdp.processing.jobs import pipeline
from cdp.processing.jobs.pipeline import build_and_publish, clean_up_interrupted_builds
from cdp.processing.segmentation.config import SegmentConfig, load_segment_config
from cdp.settings import Settings
from cdp.storage.database import connect
from cdp.storage.paths import events_folder
from tests.processing.store import AS_OF, days_ago, event, order, store


def _settings(tmp_path) -> Settings:
    return Settings(storage={"db_path": tmp_path / "live.duckdb"}, export={"out_dir": tmp_path})


@pytest.fixture
def live(tmp_path) -> Iterator[tuple[duckdb.DuckDBPyConnection, Settings, SegmentConfig]]:
    """The live database with one order in it, its settings and the shipped segments."""
    settings = _settings(tmp_path)
    with connect(settings.storage.db_path) as con:
        store(con, order("ann", days_ago(5), "10"))
        yield con, settings, load_segment_config(settings)


def _builds(con) -> list[tuple]:
    return con.execute(
        "SELECT status, finished_at IS NOT NULL, message FROM builds ORDER BY build_id"
    ).fetchall()


def test_a_build_whose_analyst_publish_fails_is_recorded_so_and_stays_the_latest(live, monkeypatch):
    con, settings, segments = live
    build_and_publish(con, settings, segments, AS_OF)
    store(con, order("bob", days_ago(1), "10"))

    def fail(con, settings):
        raise RuntimeError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "publish_analyst_database", fail)
        with pytest.raises(RuntimeError, match="disk full"):
            build_and_publish(con, settings, segments, AS_OF + timedelta(days=1))
    status, finished, message = _builds(con)[1]
    # Its profiles are in the live database: a backfill of an earlier date must not
    # replace them, and exports take its memberships.
    backfill = build_and_publish(con, settings, segments, AS_OF - timedelta(days=1))
    exported = run_export(con, settings, segments)
    profiles = con.execute("SELECT count(*) FROM customer_profiles").fetchall()
    assert status == "publish_failed" and finished
    assert "analyst database not published: RuntimeError: disk full" in message
    assert not backfill.build.published_current
    assert profiles == [(2,)]
    assert exported.as_of == (AS_OF + timedelta(days=1)).date()


def test_builds_a_killed_process_left_unfinished_are_marked_at_the_next_build(live):
    con, settings, segments = live
    # A process killed while computing leaves 'running'; one killed while writing the
    # analyst database, after the build's own tables were written, 'publishing'.
    for status in ("running", "publishing"):
        con.execute(
            "INSERT INTO builds (as_of, started_at, status, message) "
            "VALUES ($at, $at, $status, '2 merges')",
            {"at": AS_OF, "status": status},
        )
    build_and_publish(con, settings, segments, AS_OF)
    builds = _builds(con)
    assert [(status, finished) for status, finished, _ in builds] == [
        ("interrupted", True),
        ("publish_failed", True),
        ("succeeded", True),
    ]
    assert builds[0][2].startswith("interrupted:")
    assert builds[1][2].startswith("2 merges; analyst database not published: interrupted")


def test_files_a_killed_publish_left_are_removed(live, tmp_path):
    con, settings, segments = live
    first = build_and_publish(con, settings, segments, AS_OF)
    target = first.analyst.path
    parts = sorted(p.name for p in events_folder(target).iterdir())
    # A publish killed by another process (pid 999999): its snapshot file and WAL,
    # and an events part newer than any the snapshot names.
    staging = target.with_name(f".{target.name}.tmp-999999")
    for leftover in (staging, staging.with_name(staging.name + ".wal")):
        leftover.write_bytes(b"half a snapshot, with personal data")
    orphan = events_folder(target) / "part-000009"
    orphan.mkdir()
    (orphan / "data_0.parquet").write_bytes(b"events")
    build_and_publish(con, settings, segments, AS_OF)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert sorted(p.name for p in events_folder(target).iterdir()) == parts
    # The same, on its own: what the service calls when it starts.
    staging.write_bytes(b"half a snapshot")
    report = tmp_path / ".live.report.html.tmp"
    report.write_text("<html>half a report")
    assert clean_up_interrupted_builds(con, settings) == [staging, report]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_build_clears_what_killed_ones_left_once(live, monkeypatch):
    from cdp.processing.stages import run as build
    from cdp.storage import analyst

    calls = []
    for module, name in (
        (build, "mark_interrupted_builds"),
        (analyst, "remove_publish_leftovers"),
        (pipeline, "mark_interrupted_builds"),
        (pipeline, "remove_publish_leftovers"),
    ):
        original = getattr(module, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)
    con, settings, segments = live
    build_and_publish(con, settings, segments, AS_OF)
    assert sorted(calls) == ["mark_interrupted_builds", "remove_publish_leftovers"]


def _never_recorded(con, build_id, error=None):
    """finish_publishing of a process that died (or whose database write failed) just
    before it could record the outcome."""
    raise duckdb.IOException('IO Error: Could not write file "live.duckdb.wal": disk is gone')


def test_a_build_published_but_not_recorded_so_is_recorded_succeeded_by_the_next(live, monkeypatch):
    con, settings, segments = live
    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "finish_publishing", _never_recorded)
        with pytest.raises(duckdb.IOException):
            build_and_publish(con, settings, segments, AS_OF)
    assert _builds(con)[0][0] == "publishing"
    build_and_publish(con, settings, segments, AS_OF + timedelta(days=1))
    builds = _builds(con)
    assert [(status, finished) for status, finished, _ in builds] == [
        ("succeeded", True),
        ("succeeded", True),
    ]
    assert "not published" not in builds[0][2]
    assert "recorded by a later build" in builds[0][2]


@pytest.mark.parametrize("recorded", [True, False], ids=["recorded", "process died"])
def test_a_build_whose_report_was_not_written_says_so_not_that_the_analyst_copy_was_not(
    live, monkeypatch, recorded
):
    con, settings, segments = live

    def fail(analyst_db, out):
        raise RuntimeError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "write_report", fail)
        if not recorded:
            patch.setattr(pipeline, "finish_publishing", _never_recorded)
        with pytest.raises(RuntimeError, match="disk full"):
            build_and_publish(con, settings, segments, AS_OF)
    build_and_publish(con, settings, segments, AS_OF + timedelta(days=1))
    status, finished, message = _builds(con)[0]
    assert status == "publish_failed" and finished
    assert "analyst database not published" not in message
    reason = "RuntimeError: disk full" if recorded else "interrupted"
    assert f"analyst database published, report not written: {reason}" in message


def test_a_build_with_screen_alias_and_group_calls_publishes_the_analyst_database_and_report(
    live,
):
    con, settings, segments = live
    store(
        con,
        event("screen_viewed", days_ago(4), anonymous_id="a-1", properties={"name": "Home"}),
        event("alias", days_ago(3), previousId="a-1", userId="ann"),
        event(
            "group",
            days_ago(2),
            user_id="ann",
            groupId="acme",
            traits={"name": "Acme", "email": "billing@acme.example"},
        ),
    )
    published = build_and_publish(con, settings, segments, AS_OF)
    assert [status for status, _, _ in _builds(con)] == ["succeeded"]
    assert published.build.customers == 1
    assert published.report is not None and published.report.exists()
    with duckdb.connect(str(published.analyst.path), read_only=True) as analyst:
        types = analyst.execute("SELECT type, count(*) FROM events GROUP BY 1 ORDER BY 1")
        assert types.fetchall() == [
            ("alias", 1),
            ("group", 1),
            ("order_completed", 1),
            ("screen_viewed", 1),
        ]
        profile = analyst.execute(
            "SELECT user_id, anonymous_ids, emails, orders, rfm_score IS NOT NULL"
            " FROM customer_profiles"
        )
        assert profile.fetchall() == [("ann", ["a-1"], None, 1, True)]


def test_progress_hears_every_stage_of_the_build_and_its_publish_in_order(live):
    con, settings, segments = live
    heard: list[str] = []
    build_and_publish(con, settings, segments, AS_OF, progress=heard.append)
    assert tuple(heard) == pipeline.STAGES
