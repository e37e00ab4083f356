-- The fast path of batch validation (cdp.ingest.batch_validation): for each line of
-- `incoming_lines` (row_index, raw), whether DuckDB can PROVE that pydantic would accept
-- it (`fast`), and the event row pydantic would make of it. A line not proved goes to
-- pydantic (cdp.ingest.validation.validate_batch) for the verdict and the reason: this
-- query never rejects. Each condition below is there because a line failing it might
-- be judged, or read, differently by pydantic (cdp.ingest.events), so they err on the
-- side of leaving a line to pydantic.
--
-- Plain lines only: valid UTF-8 within ingest.max_event_bytes, '{' first and '}' last,
-- JSON to DuckDB, and no backslash (so no escape: a string's text is what it holds, and
-- no quote hides inside one). No whitespace before a colon (so each key's closing quote
-- is directly followed by its colon), no trailing comma (DuckDB accepts one, pydantic
-- does not), and no value that starts with a letter but true/false (null, so that a
-- present key and an absent one differ; NaN, Infinity, nan, inf: DuckDB reads them all,
-- pydantic reads NaN and Infinity and then rejects the non-finite number), an
-- exponent or 20 digits in a row (a float that could overflow). Those last tests look
-- at the text, so a string that looks so (':null' inside a value) is left to pydantic.
--
-- No key repeats: the keys of every object that may hold any (the envelope, context,
-- campaign, device, properties, traits, consent, each product line) are distinct
-- within it, and they add up to the keys in the text (each key is one '":'; a string
-- that starts with ':' only adds to the count), so no other object holds a key.
--
-- Written as projections, not filters: DuckDB pushes a filter below the projection
-- that computes what it tests, repeating json_transform for every reference. The
-- caller keeps the rows whose `keys` are not NULL and pass its check.
WITH lines AS (
    SELECT row_index, TRY(decode(raw)) AS text, octet_length(raw) AS size
    FROM incoming_lines
),
plain AS (
    SELECT row_index,
           CASE WHEN size <= $max_event_bytes
                     AND starts_with(text, '{') AND suffix(text, '}')
                     AND NOT contains(text, '\')
                     AND json_valid(text)
                     AND NOT regexp_matches(
                         text, '[ \t\r]:|,[ \t\r]*[}\]]'
                               || '|[:,\[][ \t\r]*([-+]?[A-Za-eg-su-z]|-?[0-9.]+[eE]|-?[0-9]{20})')
                     -- nesting pydantic's parser refuses (past 201 levels) needs a long
                     -- line; counted with replace(), ~15x cheaper than translate()
                     AND (size < 400
                          OR strlen(text) - strlen(replace(replace(text, '[', ''), '{', ''))
                             <= 100)
                THEN text END AS text
    FROM lines
),
parsed AS (
    SELECT row_index,
           (length(text) - length(replace(text, '":', ''))) // 2 AS key_count,
           json_transform(text, '{
               "event_id": "JSON", "messageId": "JSON", "message_id": "JSON",
               "type": "JSON", "event": "JSON", "timestamp": "JSON",
               "user_id": "JSON", "userId": "JSON",
               "anonymous_id": "JSON", "anonymousId": "JSON",
               "previous_id": "JSON", "previousId": "JSON",
               "group_id": "JSON", "groupId": "JSON",
               "context": {"channel": "JSON", "locale": "JSON", "device": {"type": "JSON"},
                           "campaign": {"name": "JSON", "source": "JSON", "medium": "JSON",
                                        "term": "JSON", "content": "JSON"}},
               "properties": {"product_id": "JSON", "sku": "JSON", "name": "JSON",
                              "category": "JSON", "price": "JSON", "quantity": "JSON",
                              "currency": "JSON", "order_id": "JSON", "total": "JSON",
                              "revenue": "JSON", "discount": "JSON", "coupon": "JSON",
                              "cart_id": "JSON", "query": "JSON", "url": "JSON",
                              "products": ["JSON"]},
               "traits": {"email": "JSON", "phone": "JSON", "first_name": "JSON",
                          "firstName": "JSON", "last_name": "JSON", "lastName": "JSON",
                          "name": "JSON", "birthday": "JSON",
                          "consent": {"email": "JSON", "sms": "JSON", "push": "JSON",
                                      "ads": "JSON"}}
           }') AS j,
           json_keys(text, ['$', '$.context', '$.context.campaign', '$.context.device',
                            '$.properties', '$.traits', '$.traits.consent']) AS keys
    FROM plain
),
named AS (
    SELECT *,
           canonical_type(CASE WHEN j.type IN ('"track"', '"Track"') THEN j.event
                               ELSE j.type END) AS type,
           coalesce(j.event_id, j.messageId, j.message_id) AS id,
           coalesce(j.user_id, j.userId) AS uid,
           coalesce(j.anonymous_id, j.anonymousId) AS anonymous,
           coalesce(j.previous_id, j.previousId) AS previous,
           coalesce(j.group_id, j.groupId) AS group_,
           aware_time(j.timestamp) AS occurred_at,
           j.properties AS props
    FROM parsed
),
checked AS (
    SELECT row_index, id, type, occurred_at, uid, anonymous, key_count, keys,
           list_transform(props.products, lambda x: json_keys(x)) AS product_keys,
           coalesce(
      -- context, campaign, device, properties, traits, consent: objects with a key or
      -- more where present (json_keys gives [] for {} and for a value of another type)
      list_bool_and(list_transform(keys, lambda k: k IS NULL OR len(k) > 0))
      -- properties.products a list (json_transform gives NULL for another type) of
      -- objects of well-typed fields (the count of their keys, below, proves them
      -- objects)
      AND (props.products IS NOT NULL OR NOT coalesce(list_contains(keys[5], 'products'), false))
      AND coalesce(list_bool_and(list_transform(props.products, lambda x: product_line(
              json_transform(x, '{"product_id": "JSON", "sku": "JSON", "name": "JSON",
                                  "category": "JSON", "price": "JSON", "quantity": "JSON"}')))),
                   true)
      -- a type pydantic's lookup has as it is written (no stripping, no lower-casing)
      AND type IS NOT NULL
      AND starts_with(j.type, '"')
      AND text_or_absent(j.event)
      -- each aliased envelope field under one name at most; ids plain and unpadded
      AND (j.event_id IS NOT NULL)::INT + (j.messageId IS NOT NULL)::INT
          + (j.message_id IS NOT NULL)::INT = 1
      AND (j.user_id IS NULL OR j.userId IS NULL)
      AND (j.anonymous_id IS NULL OR j.anonymousId IS NULL)
      AND (j.previous_id IS NULL OR j.previousId IS NULL)
      AND (j.group_id IS NULL OR j.groupId IS NULL)
      AND identifier(id)
      AND identifier_or_absent(uid)
      AND identifier_or_absent(anonymous)
      AND (uid IS NOT NULL OR anonymous IS NOT NULL)
      AND identifier_or_absent(previous)
      AND identifier_or_absent(group_)
      AND (type <> 'alias' OR previous IS NOT NULL)
      AND (type <> 'group' OR group_ IS NOT NULL)
      -- an aware time, written as DuckDB and pydantic both read it, within the bounds
      AND occurred_at BETWEEN $earliest AND $latest
      -- context
      AND text_or_absent(j.context.channel)
      AND text_or_absent(j.context.locale)
      AND text_or_absent(j.context.campaign.name)
      AND text_or_absent(j.context.campaign.source)
      AND text_or_absent(j.context.campaign.medium)
      AND text_or_absent(j.context.campaign.term)
      AND text_or_absent(j.context.campaign.content)
      -- properties
      AND identifier_or_absent(props.product_id)
      AND identifier_or_absent(props.order_id)
      AND identifier_or_absent(props.cart_id)
      AND text_or_absent(props.sku)
      AND text_or_absent(props.name)
      AND text_or_absent(props.category)
      AND text_or_absent(props.coupon)
      AND text_or_absent(props.query)
      AND text_or_absent(props.url)
      AND money_or_absent(props.price)
      AND money_or_absent(props.total)
      AND money_or_absent(props.revenue)
      AND money_or_absent(props.discount)
      AND quantity_or_absent(props.quantity)
      AND currency_or_absent(props.currency)
      -- the properties each type needs
      AND (type NOT IN ('product_viewed', 'product_added', 'product_removed')
           OR props.product_id IS NOT NULL)
      AND (type <> 'products_searched' OR props.query IS NOT NULL)
      AND (type NOT IN ('order_completed', 'order_refunded', 'order_cancelled')
           OR props.order_id IS NOT NULL)
      AND (type <> 'order_completed' OR props.total IS NOT NULL OR props.revenue IS NOT NULL)
      -- traits
      AND text_or_absent(j.traits.email)
      AND text_or_absent(j.traits.phone)
      AND text_or_absent(j.traits.first_name)
      AND text_or_absent(j.traits.firstName)
      AND text_or_absent(j.traits.last_name)
      AND text_or_absent(j.traits.lastName)
      AND text_or_absent(j.traits.name)
      AND date_or_absent(j.traits.birthday)
      AND boolean_or_absent(j.traits.consent.email)
      AND boolean_or_absent(j.traits.consent.sms)
      AND boolean_or_absent(j.traits.consent.push)
      AND boolean_or_absent(j.traits.consent.ads)
      AND text_or_absent(j.context.device.type),
           false) AS fields_ok
    FROM named
)
-- The caller proves no key repeats (see the top) from `keys`, the key lists of the
-- objects cast to one string (few distinct per batch: ~200 in a batch of the generated
-- store), against `key_count`. DuckDB's cast quotes any key it could misread, and
-- reads the string back as the same lists; it costs ~40% of joining the keys here.
SELECT row_index, id[2:-2] AS event_id, type, family_of(type) AS family, occurred_at,
       uid[2:-2] AS user_id, anonymous[2:-2] AS anonymous_id, key_count,
       CASE WHEN fields_ok THEN (keys || coalesce(product_keys, []))::VARCHAR END AS keys
FROM checked
