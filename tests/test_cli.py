"""The command line as a user runs it: real processes, real files, real broker."""

from __future__ import annotations

import subprocess
import sys

import duckdb
import pytest


def _cdp(*args: str, cwd=None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cdp", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


def test_ingest_without_kafka_configured_says_which_key_to_set(tmp_path):
    result = _cdp("ingest", "--db", str(tmp_path / "x.duckdb"), cwd=tmp_path)
    assert result.returncode == 2
    assert "kafka.bootstrap_servers" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_broker_is_a_clear_error_not_a_timeout_traceback(tmp_path):
    # A service waits for its broker (saying so once); --until-idle gives up in time.
    config = tmp_path / "c.toml"
    config.write_text("[ingest]\nbroker_unreachable_timeout_s = 2\n")
    result = _cdp(
        "--config",
        str(config),
        "ingest",
        "--until-idle",
        "--bootstrap-servers",
        "127.0.0.1:1",
        "--db",
        str(tmp_path / "x.duckdb"),
    )
    assert result.returncode == 1
    assert "no Kafka broker answers at 127.0.0.1:1" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_config_value_names_the_key(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[topics]\npartitions = -1\n")
    result = _cdp("--config", str(config), "dlq", "list", "--db", str(tmp_path / "x.duckdb"))
    assert result.returncode == 2
    assert "topics.partitions" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_input_file_is_named(tmp_path):
    result = _cdp("load", str(tmp_path / "nope.jsonl"), "--db", str(tmp_path / "x.duckdb"))
    assert result.returncode == 2
    assert "nope.jsonl" in result.stderr and "does not exist" in result.stderr


def test_generate_refuses_an_out_of_range_shape_naming_the_flag(tmp_path):
    out = str(tmp_path / "s.jsonl")
    share = _cdp("generate", "--out", out, "--buyer-share", "1.5")
    visits = _cdp("generate", "--out", out, "--return-visits", "-2")
    assert share.returncode == visits.returncode == 2
    assert "--buyer-share: must be between 0 and 1, got 1.5" in share.stderr
    assert "--return-visits: must be at least 0, got -2" in visits.stderr


def test_generate_then_load_then_dlq_list_and_replay(tmp_path):
    events = tmp_path / "store.jsonl"
    db = tmp_path / "x.duckdb"
    assert (
        _cdp(
            "generate",
            "--out",
            str(events),
            "--customers",
            "300",
            "--seed",
            "3",
            "--end",
            "2026-11-01",
        ).returncode
        == 0
    )
    loaded = _cdp("load", str(events), "--db", str(db))
    assert loaded.returncode == 0, loaded.stderr
    assert "dead-lettered" in loaded.stdout
    listed = _cdp("dlq", "list", "--db", str(db), "--limit", "3")
    assert listed.returncode == 0
    assert "reason:" in listed.stdout and "line " in listed.stdout
    replayed = _cdp("dlq", "replay", "--db", str(db))
    assert replayed.returncode == 0
    assert "0 moved to events" in replayed.stdout  # nothing was fixed in between


@pytest.mark.kafka
def test_demo_runs_with_nothing_configured_and_fills_all_four_families(tmp_path):
    db = tmp_path / "demo.duckdb"
    result = _cdp(
        "demo", "--customers", "300", "--db", str(db), "--end", "2026-11-01", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "started the bundled broker" in result.stdout
    assert "browse events through the HTTP collector" in result.stdout
    assert "dead letters:" in result.stdout
    with duckdb.connect(str(db), read_only=True) as con:
        families = {row[0] for row in con.execute("SELECT DISTINCT family FROM events").fetchall()}
        by_door = dict(
            con.execute(
                "SELECT payload->>'$.context.source' IS NOT NULL, count(DISTINCT family) "
                "FROM events GROUP BY 1"
            ).fetchall()
        )
        reasons = con.execute("SELECT count(*), min(length(reason)) FROM dead_letters").fetchone()
    assert families == {"browse", "cart", "purchase", "identify"}
    assert by_door == {True: 1, False: 3}  # browse events came through HTTP, the rest not
    assert reasons[0] > 0 and reasons[1] > 10
    assert list((tmp_path / "exports" / "segments").glob("*/*/manifest.json")), result.stdout


def test_build_export_and_forget_from_the_command_line(tmp_path):
    events, db, out = tmp_path / "store.jsonl", str(tmp_path / "x.duckdb"), tmp_path / "out"
    _cdp("generate", "--out", str(events), "--customers", "200", "--end", "2026-11-01")
    assert _cdp("load", str(events), "--db", db).returncode == 0
    built = _cdp("build", "--db", db, "--as-of", "2026-11-01")
    assert built.returncode == 0, built.stderr
    assert "segment memberships in 14 segments" in built.stdout
    exported = _cdp("export", "--db", db, "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    assert "export as of 2026-11-01:" in exported.stdout
    assert (out / "segments" / "win_back" / "2026-11-01" / "members.parquet").exists()
    assert (out / "audiences" / "win_back" / "2026-11-01" / "audience_full.csv").exists()
    again = _cdp("export", "--db", db, "--out", str(out))
    assert "already exported for 2026-11-01" in again.stdout

    with duckdb.connect(db, read_only=True) as con:
        customer = con.execute(
            "SELECT customer_id FROM segment_membership WHERE segment = 'win_back' LIMIT 1"
        ).fetchall()[0][0]
        identifiers = [
            row[0]
            for row in con.execute(
                "SELECT identifier FROM customer_identities WHERE customer_id = $c", {"c": customer}
            ).fetchall()
        ]
    analyst = str(tmp_path / "x.analyst.duckdb")
    assert _in_analyst_copy(analyst, customer, identifiers) != (0, 0)
    forgot = _cdp("forget", customer, "--db", db)
    assert forgot.returncode == 0, forgot.stderr
    assert f"forgot {customer}:" in forgot.stdout
    with duckdb.connect(db, read_only=True) as con:
        left = con.execute(
            "SELECT count(*) FROM customer_profiles WHERE customer_id = $c", {"c": customer}
        ).fetchall()
    assert left == [(0,)]
    # The analyst copy, events included, was republished without them at once.
    assert "republished without them" in forgot.stdout
    assert _in_analyst_copy(analyst, customer, identifiers) == (0, 0)


def test_build_then_backtest_and_status_show_how_good_predicted_clv_is(tmp_path):
    events, db = tmp_path / "store.jsonl", str(tmp_path / "x.duckdb")
    _cdp("generate", "--out", str(events), "--customers", "300", "--end", "2026-11-01")
    assert _cdp("load", str(events), "--db", db).returncode == 0
    built = _cdp("build", "--db", db, "--as-of", "2026-11-01")
    assert built.returncode == 0, built.stderr
    assert "predicting with" in built.stdout and "backtest " in built.stdout
    backtest = _cdp("backtest", "--db", db, "--holdout-days", "90")
    assert backtest.returncode == 0, backtest.stderr
    assert "fitted on orders to 2026-08-03, forecast the next 90 days" in backtest.stdout
    for label in ("BG/NBD", "MBG/NBD", "Pareto/NBD"):
        assert f"{label}: forecast" in backtest.stdout
    assert "repeat purchases before" in backtest.stdout
    status = _cdp("status", "--db", db)
    assert status.returncode == 0, status.stderr
    [line] = [line for line in status.stdout.splitlines() if line.startswith("CLV backtest")]
    assert "as of 2026-11-01" in line and "MAE" in line
    later = _cdp("backtest", "--db", db, "--as-of", "2026-12-01")
    assert later.returncode == 2 and "after the latest build" in later.stderr


def _in_analyst_copy(path: str, customer: str, identifiers: list[str]) -> tuple[int, int]:
    """(profiles, events) of a customer in the analyst database."""
    with duckdb.connect(path, read_only=True) as con:
        return con.execute(
            "SELECT (SELECT count(*) FROM customer_profiles WHERE customer_id = $c),"
            " (SELECT count(*) FROM events WHERE list_contains($ids, 'user:' || user_id)"
            "  OR list_contains($ids, 'anon:' || anonymous_id))",
            {"c": customer, "ids": identifiers},
        ).fetchall()[0]


def test_a_bad_segment_rule_fails_before_any_work_and_names_the_segment(tmp_path):
    segments = tmp_path / "segments.toml"
    segments.write_text(
        '[[segments]]\nname = "vip"\nrule = "net_revenue >> 100"\nconsent = "email"\n'
    )
    config = tmp_path / "cdp.toml"
    config.write_text(f'[segments]\nfile = "{segments}"\n')
    for command in (["segments", "list"], ["build", "--db", str(tmp_path / "x.duckdb")]):
        result = _cdp("--config", str(config), *command)
        assert result.returncode == 2
        assert "segment 'vip': rule 'net_revenue >> 100'" in result.stderr, result.stderr
        assert "found '>' at position 14" in result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.duckdb").exists()


def test_segments_list_checks_and_shows_the_shipped_segments(tmp_path):
    result = _cdp("segments", "list", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "14 segments from the shipped config/segments.toml (all rules valid)" in result.stdout


def test_sql_prints_a_table_csv_or_json_and_refuses_writes(published_store):
    db = str(published_store.storage.db_path)
    query = "SELECT rfm_segment, count(*) AS n FROM customer_profiles GROUP BY 1 ORDER BY 1"
    table = _cdp("sql", query, "--db", db)
    assert table.returncode == 0, table.stderr
    assert "rfm_segment" in table.stdout and "Champions" in table.stdout
    as_csv = _cdp("sql", query, "--db", db, "--format", "csv")
    assert as_csv.stdout.splitlines()[0] == "rfm_segment,n"
    as_json = _cdp("sql", "SELECT 1 AS one", "--db", db, "--format", "json")
    assert as_json.stdout.strip() == '{"one": 1}'
    refused = _cdp("sql", "DELETE FROM customer_profiles", "--db", db)
    assert refused.returncode == 2 and "read-only" in refused.stderr
    bad = _cdp("sql", "SELECT nope FROM events", "--db", db)
    assert bad.returncode == 2 and "query failed" in bad.stderr and "nope" in bad.stderr


def test_sql_before_any_build_says_how_to_get_the_analyst_database(tmp_path):
    result = _cdp("sql", "SELECT 1", "--db", str(tmp_path / "none.duckdb"))
    assert result.returncode == 2
    assert "no analyst database" in result.stderr and "cdp build" in result.stderr


def test_status_shows_build_sizes_and_dead_letters(published_store):
    result = _cdp("status", "--db", str(published_store.storage.db_path))
    assert result.returncode == 0, result.stderr
    assert "last build: #1 succeeded as of 2026-" in result.stdout
    assert "analyst database" in result.stdout and "MiB" in result.stdout
    [parts] = [line for line in result.stdout.splitlines() if "analyst event parts" in line]
    assert "MiB" in parts and ".analyst.events" in parts
    assert "dead letters:" in result.stdout
    assert "consumer lag: no Kafka configured" in result.stdout
