import duckdb
import pyarrow.parquet as pq
import pytest

from cdp.errors import ExportError
from cdp.processing.activation.destinations import DELIVERERS, Deliverer
from cdp.processing.activation.export import run_export
from cdp.processing.stages.run import run_build
from tests.processing.activation.scenario import (
    T2,
    T3,
    T4,
    _config,
    _export,
    _first_export,
    _timeline,
)
from tests.processing.store import AS_OF, settings
from tests.processing.webhook_server import webhook_receiver


def _rows(path) -> list[tuple[str]]:
    return sorted(
        duckdb.sql(f"SELECT user_id FROM read_csv('{path}', all_varchar=true)").fetchall()
    )


def test_files_diff_correctly_across_builds_enter_stay_exit_reenter(memory_db, tmp_path):
    _timeline(memory_db)
    config = _config()
    seen = {}
    for as_of in (AS_OF, T2, T3, T4):
        run_build(memory_db, settings(), as_of, config)
        result = _export(memory_db, config, tmp_path, destinations=["files"])[("files", "recent")]
        assert result.status == "succeeded", result.message
        folder = tmp_path / "segments" / "recent" / as_of.date().isoformat()
        seen[as_of] = (
            [user for (user,) in _rows(folder / "members.csv")],
            [user for (user,) in _rows(folder / "entered.csv")],
            pq.read_table(folder / "exited.parquet").num_rows,
        )
    assert seen[AS_OF] == (["ann"], ["ann"], 0)
    assert seen[T2] == (["ann", "bob"], ["bob"], 0)
    assert seen[T3] == ([], [], 2)
    assert seen[T4] == (["ann"], ["ann"], 0)


def test_consent_filters_who_each_export_contains(memory_db, tmp_path):
    _timeline(memory_db)
    config = _config(consent="email")
    run_build(memory_db, settings(), T2, config)
    results = _export(memory_db, config, tmp_path, destinations=["files", "audiences"])
    assert results[("files", "recent")].members == 1  # bob said no to email
    assert results[("audiences", "recent")].members == 2  # this destination asks for none
    folder = tmp_path / "segments" / "recent" / T2.date().isoformat()
    assert _rows(folder / "members.csv") == [("ann",)]


def test_re_exporting_an_as_of_sends_nothing_twice(memory_db, tmp_path):
    _timeline(memory_db)
    with webhook_receiver() as receiver:
        config = _config(receiver.url)
        run_build(memory_db, settings(), T2, config)
        first = _export(memory_db, config, tmp_path)
        again = _export(memory_db, config, tmp_path)
    assert first[("hook", "recent")].entered == 2
    assert {r.status for r in again.values()} == {"skipped"}
    assert len(receiver.changes()) == 2


def test_a_webhook_that_stays_down_gets_its_diff_at_the_next_run(memory_db, tmp_path):
    _timeline(memory_db)
    with webhook_receiver() as receiver:
        config = _config(receiver.url)
        run_build(memory_db, settings(), AS_OF, config)
        receiver.script = [500, 500, 500]  # every attempt of the first run fails
        first = _export(memory_db, config, tmp_path)
        assert first[("hook", "recent")].status == "failed"
        assert "after 3 attempts (last: HTTP 500" in first[("hook", "recent")].message
        assert first[("files", "recent")].status == "succeeded"  # not blocked by the hook
        assert receiver.accepted == []

        run_build(memory_db, settings(), T2, config)
        second = _export(memory_db, config, tmp_path)
    assert second[("hook", "recent")].status == "succeeded"
    # ann's entry from the failed run arrives now, with bob's.
    assert sorted(change for change, _ in receiver.changes()) == ["entered", "entered"]
    assert second[("files", "recent")].entered == 1


def test_export_before_any_build_says_what_to_do(memory_db, tmp_path):
    with pytest.raises(ExportError, match="run `cdp build`"):
        run_export(memory_db, settings(), _config(), out_dir=tmp_path)


def test_an_unknown_destination_flag_is_an_error(memory_db, tmp_path):
    _timeline(memory_db)
    run_build(memory_db, settings(), AS_OF, _config())
    with pytest.raises(ExportError, match="unknown destination"):
        run_export(memory_db, settings(), _config(), out_dir=tmp_path, destinations=["crm"])


def test_an_export_cleans_up_what_a_killed_export_left(memory_db, tmp_path):
    folder = _first_export(memory_db, tmp_path, "files", "segments")
    # What a kill -9 leaves: a 'running' row, and hidden folders holding personal data —
    # a half-written staging folder, or the previous folder retired during the swap.
    memory_db.execute(
        "INSERT INTO export_runs (destination, segment, as_of, started_at, status) "
        "VALUES ('files', 'recent', $day, $at, 'running')",
        {"day": T2.date(), "at": T2},
    )
    leftovers = [
        folder.parent / f".{T2.date().isoformat()}.tmp-k1ll3d_x",
        folder.parent / f".{AS_OF.date().isoformat()}.old-1a2b3c4d",
        tmp_path / "audiences" / "gone_segment" / f".{T2.date().isoformat()}.tmp-abc123",
    ]
    for leftover in leftovers:
        leftover.mkdir(parents=True)
        (leftover / "members.csv").write_text("customer_id,email\nc1,ann@example.com\n")
    unrelated = folder.parent / ".notes"
    unrelated.mkdir()
    # An export to another destination cleans up too: the folders may hold personal data.
    _export(memory_db, _config(), tmp_path, destinations=["audiences"])
    assert [p for p in leftovers if p.exists()] == []
    assert unrelated.exists() and (folder / "manifest.json").exists()
    status, finished, message = memory_db.execute(
        "SELECT status, finished_at, message FROM export_runs WHERE as_of = $day",
        {"day": T2.date()},
    ).fetchall()[0]
    assert status == "interrupted" and finished is not None
    assert "interrupted" in message


class _BuggyDeliverer(Deliverer):
    def deliver(self, delivery, confirm, context):
        raise ZeroDivisionError("a bug in the deliverer, not a failed delivery")


def test_a_bug_in_a_deliverer_propagates_instead_of_being_a_failed_export(
    memory_db, tmp_path, monkeypatch
):
    _timeline(memory_db)
    config = _config()
    run_build(memory_db, settings(), AS_OF, config)
    monkeypatch.setitem(DELIVERERS, "files", _BuggyDeliverer)
    with pytest.raises(ZeroDivisionError, match="a bug in the deliverer"):
        _export(memory_db, config, tmp_path, destinations=["files"])
