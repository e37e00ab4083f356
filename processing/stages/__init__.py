"""The profile build: stages over whole tables in DuckDB, then one publish transaction.

``run.run_build`` runs the stages in this order, as of one moment, each in SQL over
all the events — ``counted_events``, a TEMP view of ``events`` with each event_id
once (see ``cdp.storage.event_store.count_each_event_once``); the stages hand each
other TEMP tables, named here so a reader knows where each comes from and who reads it:

============================  ==============  ======================================
temp table                    made by         read by
============================  ==============  ======================================
counted_events (view)         run             payloads, identity, profiles
build_order_payloads          payloads        identity, profiles
build_identify_traits         payloads        profiles, segment_source
build_identities              identity        profiles
build_events                  profiles        payloads, clv
anonymous_customers,          profiles        payloads
user_customers
order_facts                   profiles        clv, rfm, segment_source, run (publish)
build_profiles                profiles        clv, rfm, segment_source (adds the
                                              columns rules read), segments, run
build_rolling_windows         profiles        segment_source, run (publish)
build_kpis                    clv             run (publish)
build_clv_backtests           clv_backtest    run (publish)
build_clv_predictions         clv             profiles' columns (PREDICTED_CLV_COLUMNS)
build_rfm                     rfm             rfm (merged into build_profiles)
build_product_affinity,       segment_source  segments (published with memberships)
build_recommendations,
build_consent
build_segment_members         segments        segments (published by run)
============================  ==============  ======================================

The stages, in order: ``payloads`` (order and identify JSON parsed once),
``identity`` (identity resolution), ``profiles``, ``clv`` (formula CLV, store KPIs,
predictive CLV, after ``clv_backtest`` has backtested the models), ``rfm``,
``segment_source`` (the columns segment rules read) and ``segments`` (membership and
traits); ``run`` runs them and publishes. Tables only one stage uses
(``identity_*``, ``clv_inputs``, ``backtest_*``, ``build_order_products``...) are
created and read within that stage's module.
Nothing is written to the live tables until ``run`` publishes them all at once, so
a failed or cancelled build changes nothing.

Statements longer than a screen are ``.sql`` files beside the module that runs them,
named after it (``profiles.sql``, ``profiles_facts.sql``, ``identity_tuples.sql``...)
and read with ``cdp.storage.sql.read_sql``. Each opens with a comment saying what it
makes, which temp tables it reads and which ``$parameters`` it takes.
"""
