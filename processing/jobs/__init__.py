"""What runs the stages: ``pipeline`` (build, then publish the analyst database and
the report), ``scheduler`` (``cdp run``'s refreshes, nightly build and export) and
``kpis`` (a build's store KPIs, read back as a dataclass)."""
