import hashlib

import duckdb

from tests.processing.activation.scenario import _first_export


def test_ad_audiences_hold_sha256_of_normalized_email_and_e164_phone(memory_db, tmp_path):
    folder = _first_export(memory_db, tmp_path, "audiences", "audiences")
    rows = duckdb.sql(
        f"SELECT email, phone FROM read_csv('{folder / 'audience_add.csv'}')"
    ).fetchall()
    sha = lambda text: hashlib.sha256(text.encode()).hexdigest()  # noqa: E731
    # Trimmed and lower-cased; the national number gets the default country code, its
    # leading 0 dropped: +44 20 7946 0000.
    assert rows == [(sha("ann@example.com"), sha("+442079460000"))]
