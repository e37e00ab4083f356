"""The segment rule language: a small, safe expression language compiled to DuckDB SQL.

A rule is a boolean expression over the columns of the segment source (customer
profiles with RFM and CLV, rolling-window activity and a few derived columns; see
``cdp.processing.stages.segments``)::

    rfm_segment in ('Champions', 'Loyal') and not consent_email is null
    first_order_at within 30 days            -- in the 30 days up to the build's as-of
    next_order_anniversary within next 7 days
    predicted_clv in top 10%                 -- of customers with a value (ties at
                                             -- the boundary are left out)
    orders between 2 and 5 or historic_clv >= 1000
    top_categories_bought contains 'shoes'
    birthday_this_month                      -- a boolean column on its own

Operators: ``= != <> < <= > >=``, ``[not] in (…)``, ``[not] between … and …``,
``is [not] null``, ``within [next] N hours|days|weeks``, ``in top|bottom N%``,
``contains`` (list columns), ``and``, ``or``, ``not`` and parentheses. Keywords are
case-insensitive. A comparison with a NULL value is not true, so customers without
a value never match it (``not`` included).

Every rule is checked against the source's column types when the config is loaded:
an unknown column, operator or a type mismatch is a ``RuleError`` naming the token
and its position. The compiler never puts text from the rule into SQL: column names
come from the catalog (quoted), and every literal becomes a bound parameter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

from cdp.storage.sql import quote_identifier

# Kinds of column the language tells apart (from DuckDB's type names).
NUMBER, TEXT, BOOLEAN, TIME, LIST = "number", "text", "boolean", "time", "list"

_KEYWORDS = {
    "and",
    "or",
    "not",
    "in",
    "between",
    "is",
    "null",
    "within",
    "next",
    "top",
    "bottom",
    "contains",
    "true",
    "false",
    "hours",
    "hour",
    "days",
    "day",
    "weeks",
    "week",
}
_UNIT_HOURS = {"hour": 1, "hours": 1, "day": 24, "days": 24, "week": 168, "weeks": 168}
_COMPARISONS = {"=": "=", "!=": "<>", "<>": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>\d+(?:\.\d+)?)
      | (?P<string>'(?:[^']|'')*'|"(?:[^"]|"")*")
      | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op><=|>=|!=|<>|=|<|>)
      | (?P<punct>[(),%])
    )""",
    re.VERBOSE,
)


class RuleError(ValueError):
    """A rule that does not parse or does not type-check; the message names the token."""


def column_kind(duckdb_type: str) -> str:
    """The language's kind of a DuckDB column type."""
    upper = duckdb_type.upper()
    if upper.endswith("[]"):
        return LIST
    if upper == "BOOLEAN":
        return BOOLEAN
    if upper.startswith(("TIMESTAMP", "DATE")):
        return TIME
    if upper.startswith(("VARCHAR", "JSON")):
        return TEXT
    return NUMBER


@dataclass(frozen=True)
class _Token:
    kind: str  # number | string | word | op | punct | end
    text: str
    position: int

    @property
    def keyword(self) -> str | None:
        lowered = self.text.lower()
        return lowered if self.kind == "word" and lowered in _KEYWORDS else None


def _tokenize(rule: str) -> list[_Token]:
    tokens, position = [], 0
    while position < len(rule):
        if rule[position:].strip() == "":
            break
        match = _TOKEN.match(rule, position)
        if not match:
            start = len(rule) - len(rule[position:].lstrip())
            raise RuleError(f"unexpected character {rule[start]!r} at position {start + 1}")
        kind = match.lastgroup or ""
        tokens.append(_Token(kind, match.group(kind), match.start(kind) + 1))
        position = match.end()
    tokens.append(_Token("end", "end of rule", len(rule) + 1))
    return tokens


@dataclass
class CompiledRule:
    """A rule as a SQL predicate over ``segment_source`` with its bound parameters.

    ``$as_of`` is left for the caller to bind (the build's as-of)."""

    sql: str
    params: dict[str, object] = field(default_factory=dict)
    columns: set[str] = field(default_factory=set)


def compile_rule(rule: str, catalog: dict[str, str], param_prefix: str = "p") -> CompiledRule:
    """Parse and type-check ``rule`` against ``catalog`` (column → DuckDB type)."""
    return _Compiler(rule, catalog, param_prefix).compile()


class _Compiler:
    def __init__(self, rule: str, catalog: dict[str, str], prefix: str) -> None:
        if not rule.strip():
            raise RuleError("the rule is empty")
        self.tokens = _tokenize(rule)
        self.index = 0
        self.kinds = {name: column_kind(kind) for name, kind in catalog.items()}
        self.out = CompiledRule("")
        self.prefix = prefix

    # -- token helpers ------------------------------------------------------------
    @property
    def current(self) -> _Token:
        return self.tokens[self.index]

    def _advance(self) -> _Token:
        token = self.current
        self.index += 1
        return token

    def _accept(self, keyword: str) -> bool:
        if self.current.keyword == keyword or (
            self.current.kind in ("punct", "op") and self.current.text == keyword
        ):
            self.index += 1
            return True
        return False

    def _expect(self, keyword: str, what: str) -> None:
        if not self._accept(keyword):
            raise self._error(f"expected {what}")

    def _error(self, message: str, token: _Token | None = None) -> RuleError:
        token = token or self.current
        return RuleError(f"{message}, found {token.text!r} at position {token.position}")

    def _param(self, value: object) -> str:
        name = f"{self.prefix}{len(self.out.params)}"
        self.out.params[name] = value
        return f"${name}"

    # -- grammar ------------------------------------------------------------------
    def compile(self) -> CompiledRule:
        sql = self._or()
        if self.current.kind != "end":
            raise self._error("expected 'and', 'or' or the end of the rule")
        self.out.sql = f"coalesce(({sql}), false)"
        return self.out

    def _or(self) -> str:
        parts = [self._and()]
        while self._accept("or"):
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"

    def _and(self) -> str:
        parts = [self._not()]
        while self._accept("and"):
            parts.append(self._not())
        return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"

    def _not(self) -> str:
        if self._accept("not"):
            return f"(NOT {self._not()})"
        if self._accept("("):
            inner = self._or()
            self._expect(")", "')'")
            return f"({inner})"
        return self._predicate()

    def _column(self) -> tuple[str, str]:
        token = self.current
        if token.kind != "word" or token.keyword:
            raise self._error("expected a column name")
        name = token.text.lower()
        if name not in self.kinds:
            raise self._error(f"unknown column {name!r}", token)
        self._advance()
        self.out.columns.add(name)
        return quote_identifier(name), self.kinds[name]

    def _predicate(self) -> str:
        start = self.current
        column, kind = self._column()
        token = self.current
        if token.kind == "op":
            return self._comparison(column, kind, start)
        negate = self._accept("not")
        if self._accept("in"):
            if self.current.keyword in ("top", "bottom"):
                if negate:
                    raise self._error("'not in top/bottom' is not supported; use 'in bottom'")
                return self._percentile(column, kind, start)
            return self._in_list(column, kind, negate)
        if self._accept("between"):
            low = self._value(kind, start)
            self._expect("and", "'and' in 'between … and …'")
            high = self._value(kind, start)
            return f"({column} {'NOT ' if negate else ''}BETWEEN {low} AND {high})"
        if negate:
            raise self._error("expected 'in' or 'between' after 'not'")
        if self._accept("is"):
            negated = self._accept("not")
            self._expect("null", "'null' after 'is'")
            return f"({column} IS {'NOT ' if negated else ''}NULL)"
        if self._accept("within"):
            return self._within(column, kind, start)
        if self._accept("contains"):
            if kind != LIST:
                raise self._error(f"'contains' needs a list column, {start.text!r} is {kind}")
            return f"list_contains({column}, {self._literal(TEXT, start)})"
        if kind == BOOLEAN:
            return f"({column} IS TRUE)"
        raise self._error(f"expected an operator after column {start.text!r}")

    def _comparison(self, column: str, kind: str, start: _Token) -> str:
        op_token = self._advance()
        op = _COMPARISONS[op_token.text]
        if kind == LIST:
            raise self._error(
                "a list column can only be used with 'contains' or 'is null'", op_token
            )
        if kind == BOOLEAN and op not in ("=", "<>"):
            raise self._error(
                f"a boolean column cannot be compared with {op_token.text!r}", op_token
            )
        return f"({column} {op} {self._value(kind, start)})"

    def _in_list(self, column: str, kind: str, negate: bool) -> str:
        if kind in (LIST, BOOLEAN):
            raise self._error(f"'in (…)' needs a number, text or time column, not {kind}")
        self._expect("(", "'(' to start the list of values")
        values = [self._literal(kind, self.current)]
        while self._accept(","):
            values.append(self._literal(kind, self.current))
        self._expect(")", "')' to close the list of values")
        return f"({column} {'NOT ' if negate else ''}IN ({', '.join(values)}))"

    def _percentile(self, column: str, kind: str, start: _Token) -> str:
        top = self._advance().keyword == "top"
        if kind != NUMBER:
            raise self._error(f"'in top/bottom N%' needs a number column, {start.text!r} is {kind}")
        token = self.current
        if token.kind != "number":
            raise self._error("expected a percentage such as 10%")
        percent = float(self._advance().text)
        self._expect("%", "'%' after the percentage")
        if not 0 < percent <= 100:
            raise self._error(
                f"the percentage must be above 0 and at most 100, got {percent:g}", token
            )
        # Members: customers for whom at most N% of those with a value have a value at
        # least as good (peers included), so ties at the boundary are left out rather
        # than letting "top 10%" grow to every customer with the most common value.
        fraction = self._param(percent / 100)
        order = "DESC" if top else "ASC"
        ranked = (
            f"SELECT customer_id, count(*) OVER (ORDER BY {column} {order} RANGE BETWEEN "
            f"UNBOUNDED PRECEDING AND CURRENT ROW) AS at_least_as_good, count(*) OVER () AS n "
            f"FROM segment_source WHERE {column} IS NOT NULL"
        )
        return (
            f"(customer_id IN (SELECT customer_id FROM ({ranked}) "
            f"WHERE at_least_as_good <= {fraction} * n))"
        )

    def _within(self, column: str, kind: str, start: _Token) -> str:
        if kind != TIME:
            raise self._error(f"'within' needs a date or time column, {start.text!r} is {kind}")
        ahead = self._accept("next")
        token = self.current
        if token.kind != "number":
            raise self._error("expected a number of hours, days or weeks")
        amount = float(self._advance().text)
        unit = self.current.keyword
        if unit not in _UNIT_HOURS:
            raise self._error("expected 'hours', 'days' or 'weeks'")
        self._advance()
        span = self._param(amount * _UNIT_HOURS[unit] * 3600.0)
        value, now = f"{column}::TIMESTAMPTZ", "$as_of::TIMESTAMPTZ"
        if ahead:
            return f"({value} >= {now}::DATE AND {value} < {now} + to_seconds({span}))"
        return f"({value} > {now} - to_seconds({span}) AND {value} <= {now})"

    def _value(self, kind: str, context: _Token) -> str:
        """A literal of ``kind``, or another column of the same kind."""
        token = self.current
        if token.kind == "word" and not token.keyword:
            column, other = self._column()
            if other != kind:
                raise self._error(f"cannot compare a {kind} with {token.text!r}, a {other}", token)
            return column
        return self._literal(kind, context)

    def _literal(self, kind: str, context: _Token) -> str:
        token = self._advance()
        if token.kind == "number" and kind == NUMBER:
            return self._param(float(token.text) if "." in token.text else int(token.text))
        if token.kind == "string" and kind in (TEXT, LIST):
            return self._param(token.text[1:-1].replace(token.text[0] * 2, token.text[0]))
        if token.kind == "string" and kind == TIME:
            try:
                return self._param(date.fromisoformat(token.text[1:-1]))
            except ValueError:
                raise self._error("expected a date as 'YYYY-MM-DD'", token) from None
        if token.keyword in ("true", "false") and kind == BOOLEAN:
            return "true" if token.keyword == "true" else "false"
        expected = {
            NUMBER: "a number",
            TEXT: "a quoted text",
            LIST: "a quoted text",
            TIME: "a date 'YYYY-MM-DD'",
            BOOLEAN: "true or false",
        }[kind]
        raise self._error(f"type mismatch: {context.text!r} needs {expected}", token)
