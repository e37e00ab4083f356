"""What runs the stages: ``pipeline`` (build, then publish the analyst database and
the report) and ``scheduler`` (``cdp run``'s refreshes, nightly build and export)."""
