"""The HTML report, rendered by a real headless Chromium (Debian's package, which the
``chromium`` fixture of tests/conftest.py installs when it is missing)."""

import os
import re
import subprocess
from pathlib import Path

from cdp.storage.paths import report_path
from tests.browser import run_chromium

CHARTS = {
    "kpis",
    "clv-distribution",
    "clv-backtest",
    "rfm-heatmap",
    "segment-sizes",
    "cohort-retention",
    "funnel",
    "top-products",
}
ARTIFACTS = Path(os.environ.get("CDP_TEST_ARTIFACTS", Path(__file__).parents[3] / "test-artifacts"))


def _run(chromium: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return run_chromium(chromium, tmp_path / "profile", *args)


def test_the_report_is_one_file_that_needs_no_network(published_store):
    page = report_path(published_store).read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page and "@import" not in page
    assert {m for m in re.findall(r'data-chart="([a-z-]+)"', page)} == CHARTS


def test_chromium_renders_every_chart_of_the_report(published_store, chromium, tmp_path):
    url = report_path(published_store).resolve().as_uri()
    dom = _run(chromium, tmp_path, "--window-size=1400,2600", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    rendered = dict(re.findall(r'data-chart="([a-z-]+)" data-rendered="([^"]+)"', dom.stdout))
    rendered |= {
        k: v
        for v, k in re.findall(r'data-rendered="([^"]+)"[^>]*data-chart="([a-z-]+)"', dom.stdout)
    }
    assert set(rendered) == CHARTS, rendered
    for chart, measured in rendered.items():
        width, height, marks = map(int, re.match(r"(\d+)x(\d+):(\d+)", measured).groups())
        assert width > 200 and height > 20 and marks > 0, (chart, measured)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / "report.png"
    screenshot.unlink(missing_ok=True)
    shot = _run(chromium, tmp_path, "--window-size=1400,2600", f"--screenshot={screenshot}", url)
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert screenshot.stat().st_size > 20_000  # a page of charts, not a blank one


def test_a_store_with_no_events_yet_still_gets_an_analyst_database_and_report(tmp_path):
    from cdp.processing.jobs.pipeline import build_and_publish
    from cdp.processing.segmentation.config import load_segment_config
    from cdp.settings import Settings
    from cdp.storage.database import connect

    settings = Settings(storage={"db_path": tmp_path / "empty.duckdb"})
    with connect(settings.storage.db_path) as con:
        published = build_and_publish(con, settings, load_segment_config(settings))
    page = published.report.read_text()
    assert "0 customers" in page and "No buyers yet." in page
    assert "How good is predicted CLV?" in page and "nothing to backtest" in page
    assert set(re.findall(r'data-chart="([a-z-]+)"', page)) == CHARTS


def test_the_report_says_how_good_predicted_clv_is(published_store):
    page = report_path(published_store).read_text()
    section = page[page.index('data-chart="clv-backtest"') :]
    section = section[: section.index("</section>")]
    assert "How good is predicted CLV?" in section
    assert "Predicted CLV uses" in section and "(used)" in section
    for label in ("BG/NBD", "MBG/NBD", "Pareto/NBD"):
        assert label in section
    assert "Holdout purchases by repeat purchases before the calibration end" in section
    assert "7+" in section or "repeat purchases" in section
