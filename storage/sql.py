"""Writing SQL safely: quoting what cannot be bound, and reading statements from files.

Every value a query uses is a bound parameter. DuckDB takes no parameter in a few
places: an identifier (a trait's column name) and the path of ATTACH, COPY or a
stored view. Those, and only those, are quoted here — the one home for quoting.

SQL longer than a screen lives in ``.sql`` files beside the module that runs it,
shipped as package data and read with :func:`read_sql`, as migrations are.
"""

from __future__ import annotations

from functools import cache
from importlib import resources


def quote_identifier(name: str) -> str:
    """A column name as a quoted SQL identifier (names come from the catalog only)."""
    return '"' + name.replace('"', '""') + '"'


def sql_string(text: str) -> str:
    """``text`` as a SQL string literal, for the few places DuckDB takes no bound
    parameter: ATTACH's path, COPY's target, the file list of a stored view."""
    return "'" + text.replace("'", "''") + "'"


@cache
def read_sql(package: str, name: str) -> str:
    """The text of ``name`` (e.g. ``"profiles.sql"``) shipped in ``package``
    (e.g. ``"cdp.processing.stages"``); read once per process."""
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")
