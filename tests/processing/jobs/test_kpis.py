from datetime import timedelta

from cdp.processing.jobs.kpis import StoreKpis, read_store_kpis
from cdp.processing.stages.run import run_build
from tests.processing.store import AS_OF, days_ago, order, settings, store


def test_the_kpis_of_a_build_date_or_of_the_latest_build_read_back_by_name(memory_db):
    assert read_store_kpis(memory_db) is None  # no build yet
    store(memory_db, order("ann", days_ago(5), "10"), order("bob", days_ago(4), "30"))
    run_build(memory_db, settings(), AS_OF)
    store(memory_db, order("ann", days_ago(1), "20"))
    run_build(memory_db, settings(), AS_OF + timedelta(days=1))

    first = read_store_kpis(memory_db, AS_OF.date())
    latest = read_store_kpis(memory_db)

    assert isinstance(first, StoreKpis) and isinstance(latest, StoreKpis)
    assert first.as_of == AS_OF.date() and latest.as_of == (AS_OF + timedelta(days=1)).date()
    assert (first.customers, first.buyers) == (2, 2)
    assert first.aov == 20.0 and latest.aov == 20.0
    assert latest.repeat_rate == 0.5  # ann bought twice
    assert first.reporting_currency == latest.reporting_currency
    assert read_store_kpis(memory_db, AS_OF.date() - timedelta(days=1)) is None
