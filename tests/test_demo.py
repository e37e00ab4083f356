"""``cdp demo`` and the database it starts from."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdp.demo import run_demo
from cdp.errors import ConfigError
from cdp.ingest.recent_activity import recent_people
from cdp.settings import Settings, StorageSettings
from cdp.storage.database import connect


def _settings(db: Path) -> Settings:
    return Settings(storage=StorageSettings(db_path=db))


def test_demo_refuses_to_delete_a_database_it_did_not_create(tmp_path):
    db = tmp_path / "store.duckdb"
    with connect(db) as con:
        con.execute("CREATE TABLE precious AS SELECT 42 AS answer")
    with pytest.raises(ConfigError, match=r"--force"):
        run_demo(_settings(db), customers=20, seed=1, say=lambda line: None)
    with connect(db, read_only=True) as con:
        assert con.execute("SELECT answer FROM precious").fetchone() == (42,)


def test_demo_refuses_to_delete_a_file_that_is_not_a_database(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    with pytest.raises(ConfigError, match=r"not a database cdp demo made"):
        run_demo(_settings(notes), customers=20, seed=1, say=lambda line: None)
    assert notes.read_text() == "my notes"


@pytest.mark.kafka
def test_a_second_demo_replaces_the_database_the_first_one_made(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the demo's exports go to ./exports
    db = tmp_path / "demo.duckdb"
    first = run_demo(_settings(db), customers=30, seed=1, say=lambda line: None)
    second = run_demo(_settings(db), customers=40, seed=2, say=lambda line: None)
    with connect(db, read_only=True) as con:
        customers = con.execute("SELECT count(*) FROM customer_profiles").fetchone()[0]
    assert first.ingested.consumed > 0 and second.ingested.consumed > 0
    assert customers == 40 + sum(recent_people(40))  # the store's fresh last days


@pytest.mark.kafka
def test_the_demo_store_is_alive_a_year_of_trends_and_every_segment_filled(tmp_path, monkeypatch):
    """Month-end builds over the last 12 months give every trend a year of points, and
    the store's fresh last days fill the welcome and abandoned-cart segments."""
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "demo.duckdb"
    run_demo(_settings(db), customers=300, seed=3, say=lambda line: None)
    with connect(db, read_only=True) as con:
        dates = con.execute("SELECT count(DISTINCT as_of) FROM store_kpis").fetchone()[0]
        sizes = dict(
            con.execute(
                "SELECT segment, members FROM segment_sizes "
                "WHERE as_of = (SELECT max(as_of) FROM segment_sizes)"
            ).fetchall()
        )
    assert dates == 13  # 12 month ends and today
    assert sizes["welcome"] >= 1 and sizes["abandoned_cart"] >= 1
