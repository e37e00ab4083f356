-- Macros of the fast path (batch_validation.sql), created once in the in-memory
-- connection that runs it. Each takes a value as json_transform gives it for a
-- 'JSON' field: the value's JSON text (a string with its quotes), or NULL where the
-- key is absent (batch_validation.sql leaves out every line holding a null).

-- str | None: a JSON string.
CREATE MACRO text_or_absent(v) AS v IS NULL OR starts_with(v, '"');

-- cdp.ingest.events.Identifier: printable ASCII with no space at either end, so that
-- pydantic's strip_whitespace leaves it as it is; 1 to 256 characters.
CREATE MACRO identifier(v) AS regexp_full_match(v, '"[!-~]([ -~]{0,254}[!-~])?"');
CREATE MACRO identifier_or_absent(v) AS v IS NULL OR identifier(v);

-- Money (Decimal >= 0 that fits DECIMAL(18, 4)), written as a string of plain digits.
CREATE MACRO money_or_absent(v) AS
    v IS NULL OR regexp_full_match(v, '"[0-9]{1,14}(\.[0-9]{1,4})?"');

-- Quantity (an int >= 0 that fits INTEGER), written as a JSON integer.
CREATE MACRO quantity_or_absent(v) AS v IS NULL OR regexp_full_match(v, '[0-9]{1,9}');

-- CurrencyCode: three ASCII letters.
CREATE MACRO currency_or_absent(v) AS v IS NULL OR regexp_full_match(v, '"[A-Za-z]{3}"');

-- bool | None, as JSON true or false (pydantic would also take "yes", 1, ...).
CREATE MACRO boolean_or_absent(v) AS v IS NULL OR v IN ('true', 'false');

-- date | None: YYYY-MM-DD, a real day of years 1 to 9999.
CREATE MACRO date_or_absent(v) AS
    v IS NULL
    OR (regexp_full_match(v, '"[0-9]{4}-[0-9]{2}-[0-9]{2}"')
        AND v[2:5] <> '0000' AND TRY_CAST(v[2:-2] AS DATE) IS NOT NULL);

-- AwareDatetime: YYYY-MM-DDTHH:MM:SS[.ffffff](Z|+HH:MM|-HH:MM), each part in its range
-- (no 24:00, no leap second), read by DuckDB as the instant pydantic reads. NULL if
-- the value is not written so.
CREATE MACRO aware_time(v) AS
    CASE WHEN regexp_full_match(
                  v, '"[0-9]{4}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]'
                     || '(\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"')
              AND v[2:5] <> '0000'
         THEN TRY_CAST(v[2:-2] AS TIMESTAMPTZ) END;

-- A ProductLine's fields (a struct of JSON texts) typed as pydantic needs them.
CREATE MACRO product_line(p) AS
    identifier_or_absent(p.product_id) AND text_or_absent(p.sku)
    AND text_or_absent(p.name) AND text_or_absent(p.category)
    AND money_or_absent(p.price) AND quantity_or_absent(p.quantity);

