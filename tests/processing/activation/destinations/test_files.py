import hashlib
import json

import duckdb
import pyarrow.parquet as pq

from cdp.processing.stages.run import run_build
from tests.processing.activation.scenario import _config, _export, _first_export, _timeline
from tests.processing.store import AS_OF, settings


def test_export_files_are_readable_and_the_manifest_matches_them(memory_db, tmp_path):
    folder = _first_export(memory_db, tmp_path, "files", "segments")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["counts"] == {"members": 1, "entered": 1, "exited": 0}
    assert manifest["segment"] == "recent" and manifest["as_of"] == "2026-06-30"
    for name, entry in manifest["files"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == entry["sha256"]
    assert {f.name for f in folder.iterdir()} == set(manifest["files"]) | {"manifest.json"}
    table = pq.read_table(folder / "members.parquet")
    assert table.column_names == ["customer_id", "user_id", "email", "phone", "orders"]
    assert table.column("email").to_pylist() == ["ann@example.com"]
    line = json.loads((folder / "members.jsonl").read_text().splitlines()[0])
    assert line["traits"] == {"orders": 1}
    assert duckdb.sql(
        f"SELECT count(*) FROM read_json('{folder / 'members.jsonl'}')"
    ).fetchall() == [(1,)]
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], "no temp folders"


def test_a_folder_that_cannot_be_written_fails_that_delivery_only(memory_db, tmp_path):
    _timeline(memory_db)
    config = _config()
    run_build(memory_db, settings(), AS_OF, config)
    (tmp_path / "segments").write_text("a file where the folder should be")
    results = _export(memory_db, config, tmp_path, destinations=["files", "audiences"])
    failed = results[("files", "recent")]
    assert failed.status == "failed"
    assert "NotADirectoryError" in failed.message and "segments" in failed.message
    assert results[("audiences", "recent")].status == "succeeded"
