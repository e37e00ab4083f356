from datetime import date

from cdp.ingest.generator import generate_store
from cdp.ingest.loader import load_file
from cdp.ingest.validation import ValidationLimits
from tests.helpers import offsets_accounted


def test_every_line_lands_in_exactly_one_table(tmp_path, memory_db):
    source = tmp_path / "s.jsonl"
    report = generate_store(source, customers=200, seed=5, end=date(2026, 11, 1))
    stats = load_file(memory_db, source, limits=ValidationLimits())
    lines = sum(1 for line in source.read_bytes().splitlines() if line.strip())
    assert stats.consumed == lines == report.events + report.resent
    assert stats.dead_lettered == report.malformed
    assert stats.duplicates == report.resent
    [(_, _, rows, distinct)] = offsets_accounted(memory_db)
    assert rows == distinct == lines


def test_loading_the_same_file_twice_stores_nothing_twice(tmp_path, memory_db):
    source = tmp_path / "s.jsonl"
    generate_store(source, customers=50, seed=5, end=date(2026, 11, 1))
    first = load_file(memory_db, source, limits=ValidationLimits())
    second = load_file(memory_db, source, limits=ValidationLimits())
    assert first.stored > 0
    assert (second.stored, second.duplicates) == (0, 0)
    assert memory_db.execute("SELECT count(*) FROM events").fetchone()[0] == first.stored
