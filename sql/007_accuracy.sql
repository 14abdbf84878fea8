-- 007_accuracy.sql: live accuracy per model version from the feedback that
-- clients send back (feedback joined with predictions), over a time window.

-- The smallest uuid of the millisecond holding `ts`: request ids are UUIDv7s
-- whose first 48 bits are Unix milliseconds, so a time window is a range of
-- ids and both tables' primary keys find it without touching other rows.
CREATE FUNCTION fm_uuid7_floor(p_ts timestamptz) RETURNS uuid
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT (substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-0000-0000-000000000000')::uuid
    FROM (SELECT lpad(to_hex(floor(extract(epoch FROM p_ts) * 1000)::bigint), 12, '0') AS h) AS x;
$$;

-- Accuracy of each model version on the predictions made in [since, until)
-- that have received feedback: labelled images, correct ones, the share,
-- and its 95 % Wilson score interval (honest for a handful of labels too).
-- A request's time is its id's: when the server read it.
CREATE FUNCTION fm_accuracy(p_since timestamptz, p_until timestamptz DEFAULT now())
RETURNS TABLE (model_version text, labelled bigint, correct bigint, accuracy float8, ci_low float8,
               ci_high float8, first_request timestamptz, last_request timestamptz)
LANGUAGE sql STABLE AS $$
    WITH j AS (
        SELECT p.model_version, p.ts, p.label = f.label AS ok
        FROM feedback AS f
        JOIN predictions AS p USING (request_id, image_index)
        WHERE f.request_id >= fm_uuid7_floor(p_since) AND f.request_id < fm_uuid7_floor(p_until)
          AND p.request_id >= fm_uuid7_floor(p_since) AND p.request_id < fm_uuid7_floor(p_until)
    ), g AS (
        SELECT j.model_version, count(*) AS n, count(*) FILTER (WHERE ok) AS k, min(ts) AS t0, max(ts) AS t1
        FROM j GROUP BY j.model_version
    )
    SELECT g.model_version, g.n, g.k, g.k::float8 / g.n,
           (p + z2 / (2 * g.n) - 1.959963984540054 * sqrt(p * (1 - p) / g.n + z2 / (4 * g.n * g.n))) / (1 + z2 / g.n),
           (p + z2 / (2 * g.n) + 1.959963984540054 * sqrt(p * (1 - p) / g.n + z2 / (4 * g.n * g.n))) / (1 + z2 / g.n),
           g.t0, g.t1
    FROM g, LATERAL (SELECT g.k::float8 / g.n AS p, 1.959963984540054 ^ 2 AS z2) AS c
    ORDER BY g.model_version;
$$;
