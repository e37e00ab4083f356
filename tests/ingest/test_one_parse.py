"""Issue 14 ("one parse, one truth"), end to end through `cdp load`: JSON on which the
validator and DuckDB's extraction of the typed columns could disagree is dead-lettered,
and every line still lands in exactly one table."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from cdp.cli import main
from cdp.ingest.generator import generate_store
from cdp.ingest.loader import load_file
from cdp.ingest.validation import ValidationLimits
from cdp.processing.stages.run import run_build
from cdp.storage.database import connect
from tests.helpers import encode, event
from tests.ingest.untrusted_json import Bad, reject_cases
from tests.processing.store import AS_OF, settings

GOOD = [encode(event("page_viewed", "good-1")), encode(event("order_completed", "good-2"))]


def _write(path: Path, values: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(values) + b"\n")
    return path


def _by_line(con: duckdb.DuckDBPyConnection) -> dict[int, tuple[str, str, bytes]]:
    rows = con.execute("SELECT source_offset, error_kind, reason, raw FROM dead_letters").fetchall()
    return {line: (kind, reason, raw) for line, kind, reason, raw in rows}


def _lines_accounted(con: duckdb.DuckDBPyConnection) -> list[int]:
    """Every source line found in events, dead_letters or duplicate_events, sorted,
    with repeats (a line in two tables would show twice)."""
    return [
        row[0]
        for row in con.execute(
            """SELECT source_offset FROM (
                   SELECT source_offset FROM events UNION ALL
                   SELECT source_offset FROM dead_letters UNION ALL
                   SELECT source_offset FROM duplicate_events)
               ORDER BY 1"""
        ).fetchall()
    ]


def _assert_every_case_dead_lettered(con: duckdb.DuckDBPyConnection, cases: list[Bad]) -> None:
    dead = _by_line(con)
    # Line 1 and the last line are good; the cases are lines 2 .. n+1.
    for line, case in enumerate(cases, start=2):
        kind, reason, raw = dead[line]
        assert (kind, raw) == ("invalid_event", case.value), case.name
        assert case.reason in reason, (case.name, reason)
    stored = {row[0] for row in con.execute("SELECT event_id FROM events").fetchall()}
    assert stored == {"good-1", "good-2"}
    assert _lines_accounted(con) == list(range(1, len(cases) + 3))


def test_cdp_load_dead_letters_every_json_the_typed_columns_could_read_differently(tmp_path):
    cases = reject_cases()
    source = _write(tmp_path / "s.jsonl", [GOOD[0], *(c.value for c in cases), GOOD[1]])
    with connect(tmp_path / "cdp.duckdb") as con:
        stats = load_file(con, source, limits=ValidationLimits())
        _assert_every_case_dead_lettered(con, cases)
    assert (stats.consumed, stats.stored, stats.dead_lettered) == (len(cases) + 2, 2, len(cases))


def test_the_cdp_load_command_dead_letters_them_with_the_configured_bounds(tmp_path, capsys):
    config = tmp_path / "cdp.toml"
    config.write_text(
        '[ingest]\nearliest_event_time = 2000-01-01T00:00:00Z\nmax_future_skew = "PT24H"\n'
    )
    cases = reject_cases()
    source = _write(tmp_path / "s.jsonl", [GOOD[0], *(c.value for c in cases), GOOD[1]])
    db = tmp_path / "cdp.duckdb"
    assert main(["--config", str(config), "load", str(source), "--db", str(db)]) == 0
    with connect(db) as con:
        _assert_every_case_dead_lettered(con, cases)

    # The bounds come from the settings: a later earliest_event_time rejects more.
    config.write_text(
        '[ingest]\nearliest_event_time = 2026-03-01T12:00:00Z\nmax_future_skew = "PT1H"\n'
    )
    late = _write(tmp_path / "late.jsonl", GOOD)
    assert main(["--config", str(config), "load", str(late), "--db", str(db)]) == 0
    with connect(db) as con:
        reasons = con.execute(
            "SELECT reason FROM dead_letters WHERE source_topic LIKE '%late.jsonl'"
        ).fetchall()
    # Both good events are timed 2026-03-01T12:00:00+01:00, an hour before the bound.
    assert (
        reasons
        == [
            (
                "timestamp: 2026-03-01T12:00:00+01:00 is before ingest.earliest_event_time "
                "(2026-03-01T12:00:00Z)",
            )
        ]
        * 2
    )
    capsys.readouterr()


def _with_repeated_total(line: bytes) -> bytes:
    """The order line with a first, far larger ``total`` in front of its own."""
    body = json.loads(line)
    total = json.dumps(body["properties"]["total"]).encode()
    repeated = line.replace(b'"total":' + total, b'"total":"250000.00","total":' + total, 1)
    assert repeated != line
    return repeated


def _recent_usd_order(line: bytes) -> bool:
    try:
        body = json.loads(line)
    except ValueError:  # the generator writes some malformed lines
        return False
    return (
        isinstance(body, dict)
        and body.get("type") == "order_completed"
        and body.get("timestamp", "") > "2026-01"
        and body.get("properties", {}).get("currency") == "USD"
        and b'"total":"' in line
    )


def test_an_order_with_a_repeated_total_leaves_the_stores_aov_as_without_it(tmp_path):
    source = tmp_path / "store.jsonl"
    generate_store(source, customers=500, seed=14, end=AS_OF.date())
    lines = source.read_bytes().splitlines()
    index = next(n for n, line in enumerate(lines) if _recent_usd_order(line))
    changed = [*lines[:index], _with_repeated_total(lines[index]), *lines[index + 1 :]]
    with_repeat = _write(tmp_path / "with.jsonl", changed)
    without = _write(tmp_path / "without.jsonl", [*lines[:index], *lines[index + 1 :]])

    aov = {}
    for name, path in [("with", with_repeat), ("without", without)]:
        with connect(tmp_path / f"{name}.duckdb") as con:
            load_file(con, path, limits=ValidationLimits())
            run_build(con, settings(), AS_OF)
            aov[name] = con.execute("SELECT aov FROM store_kpis").fetchall()[0][0]
            if name == "with":
                dead = con.execute(
                    "SELECT reason FROM dead_letters WHERE source_offset = $line",
                    {"line": index + 1},
                ).fetchall()
    assert dead == [("properties.total: repeated key",)]
    assert aov["with"] == aov["without"]
