-- 003_rollups.sql: the rollups that drift checks read instead of the raw log.
-- The writer keeps, per (60 s bucket, model version), the per-pixel value
-- counts of the sampled images and the counts of the model's outputs
-- (host/store/fm_pixel_stats.c), and applies them once the bucket has closed
-- with fm_pixel_delta_apply() and fm_prediction_delta_apply().
-- fm_rollup_compact() merges old buckets into wider ones; the *_recompute()
-- functions and fm_image_features() derive the same numbers from the raw
-- rows, so that tests can prove the rollups right, and fm_rollup_rebuild()
-- repairs a range from them. See docs/database.md.

-- The width of the buckets the writer fills, and the grid they sit on
-- (date_bin's origin). Wider buckets made by compaction use the same origin,
-- so 60 s buckets nest in hours and hours in days.
CREATE FUNCTION fm_bucket_width() RETURNS interval
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT interval '60 seconds' $$;

CREATE FUNCTION fm_bucket_origin() RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT timestamptz '2000-01-01 00:00:00+00' $$;

CREATE FUNCTION fm_bucket_start(ts timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS
$$ SELECT date_bin(fm_bucket_width(), ts, fm_bucket_origin()) $$;

-- The grid the confidence is counted on: round(c·10000), rounding half to
-- even (rint, as C's nearbyint and numpy's round do).
CREATE FUNCTION fm_confidence_q(c float8) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS
$$ SELECT round(c * 10000)::integer $$;

-- Element-wise sums of count arrays, and the select-list text that sums a
-- counts column over many rows. Generated as plain subscript expressions:
-- PostgreSQL has no element-wise array arithmetic, and this form is several
-- times faster than unnest() and re-aggregation.
DO $$
BEGIN
    EXECUTE format('CREATE FUNCTION fm_counts_add(a int4[], b int4[]) RETURNS int4[] '
                   'LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $f$ SELECT ARRAY[%s] $f$',
                   (SELECT string_agg(format('a[%s] + b[%s]', i, i), ', ' ORDER BY i)
                    FROM generate_series(1, 256) AS i));
    EXECUTE format('CREATE FUNCTION fm_classes_add(a int8[], b int8[]) RETURNS int8[] '
                   'LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $f$ SELECT ARRAY[%s] $f$',
                   (SELECT string_agg(format('a[%s] + b[%s]', i, i), ', ' ORDER BY i)
                    FROM generate_series(1, 10) AS i));
END $$;

CREATE FUNCTION fm_counts_sum_sql(col text, n integer DEFAULT 256) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT 'ARRAY[' || string_agg(format('sum(%s[%s])', col, i), ', ' ORDER BY i) || ']::int8[]'
    FROM generate_series(1, n) AS i
$$;

-- Merges two sparse (grid index, count) lists into one, ascending.
CREATE FUNCTION fm_sparse_merge(q1 int4[], n1 int8[], q2 int4[], n2 int8[], OUT q int4[], OUT n int8[])
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(x.q ORDER BY x.q), '{}'), coalesce(array_agg(x.n ORDER BY x.q), '{}')
    FROM (SELECT u.q, sum(u.n)::int8 AS n
          FROM (SELECT * FROM unnest(q1, n1) UNION ALL SELECT * FROM unnest(q2, n2)) AS u(q, n)
          GROUP BY u.q) AS x
$$;

-- Adds the pixel counts of a bucket's sampled images.
--   p_bucket_start  the bucket (fm_bucket_start() of the images' timestamps)
--   p_images        how many images the delta counts
--   p_counts        784 × 256 counts, pixel-major: p_counts[pixel*256 + v + 1]
--                   is how many of the images have value v at that pixel
-- Several writers may add to the same bucket: each takes the bucket's rows in
-- the same order (its rollup_buckets row, then pixels 0..783), so two cannot
-- deadlock.
CREATE FUNCTION fm_pixel_delta_apply(p_model_version text, p_bucket_start timestamptz,
                                     p_images bigint, p_counts int4[])
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF p_model_version IS NULL OR p_bucket_start IS NULL OR p_images IS NULL OR p_counts IS NULL THEN
        RAISE EXCEPTION 'fm_pixel_delta_apply: NULL argument';
    END IF;
    IF array_ndims(p_counts) <> 1 OR cardinality(p_counts) <> 784 * 256 THEN
        RAISE EXCEPTION 'fm_pixel_delta_apply: p_counts must hold 784*256 = 200704 counts, got %',
            cardinality(p_counts);
    END IF;
    IF fm_bucket_start(p_bucket_start) <> p_bucket_start THEN
        RAISE EXCEPTION 'fm_pixel_delta_apply: % is not a bucket start (fm_bucket_start() gives %)',
            p_bucket_start, fm_bucket_start(p_bucket_start);
    END IF;
    IF p_images < 0 THEN
        RAISE EXCEPTION 'fm_pixel_delta_apply: negative image count %', p_images;
    END IF;
    -- array_lower may be other than 1 for an array sent as '[0:200703]={...}'.
    IF array_lower(p_counts, 1) <> 1 THEN
        p_counts := p_counts[array_lower(p_counts, 1):array_upper(p_counts, 1)];
    END IF;
    INSERT INTO rollup_buckets AS b (model_version, bucket_start, bucket_width, images)
    VALUES (p_model_version, p_bucket_start, fm_bucket_width(), p_images)
    ON CONFLICT (model_version, bucket_start, bucket_width) DO UPDATE SET images = b.images + excluded.images;
    INSERT INTO pixel_rollups AS r (model_version, bucket_start, bucket_width, pixel, counts)
    SELECT p_model_version, p_bucket_start, fm_bucket_width(), p.pixel,
           p_counts[p.pixel * 256 + 1 : p.pixel * 256 + 256]
    FROM generate_series(0, 783) AS p(pixel)
    ORDER BY p.pixel
    ON CONFLICT (model_version, bucket_start, bucket_width, pixel)
    DO UPDATE SET counts = fm_counts_add(r.counts, excluded.counts);
END $$;

-- Adds the counts of a bucket's predictions.
--   p_predictions   how many predictions the delta counts
--   p_class_counts  10 counts, one per predicted class
--   p_confidence_q  the confidence grid indexes fm_confidence_q() present,
--                   ascending; p_confidence_n their counts
CREATE FUNCTION fm_prediction_delta_apply(p_model_version text, p_bucket_start timestamptz,
                                          p_predictions bigint, p_class_counts int8[],
                                          p_confidence_q int4[], p_confidence_n int8[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    q int4[];
    n int8[];
BEGIN
    IF p_model_version IS NULL OR p_bucket_start IS NULL OR p_predictions IS NULL OR p_class_counts IS NULL
       OR p_confidence_q IS NULL OR p_confidence_n IS NULL THEN
        RAISE EXCEPTION 'fm_prediction_delta_apply: NULL argument';
    END IF;
    IF fm_bucket_start(p_bucket_start) <> p_bucket_start THEN
        RAISE EXCEPTION 'fm_prediction_delta_apply: % is not a bucket start (fm_bucket_start() gives %)',
            p_bucket_start, fm_bucket_start(p_bucket_start);
    END IF;
    IF cardinality(p_class_counts) <> 10 OR cardinality(p_confidence_q) <> cardinality(p_confidence_n) THEN
        RAISE EXCEPTION 'fm_prediction_delta_apply: need 10 class counts and as many confidence counts as grid indexes';
    END IF;
    IF (SELECT sum(x) FROM unnest(p_class_counts) AS x) <> p_predictions
       OR (SELECT sum(x) FROM unnest(p_confidence_n) AS x) <> p_predictions THEN
        RAISE EXCEPTION 'fm_prediction_delta_apply: the class and confidence counts must each sum to % predictions',
            p_predictions;
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(p_confidence_q) AS x WHERE x < 0 OR x > 10000) THEN
        RAISE EXCEPTION 'fm_prediction_delta_apply: confidence grid indexes must be 0..10000';
    END IF;
    INSERT INTO rollup_buckets (model_version, bucket_start, bucket_width)
    VALUES (p_model_version, p_bucket_start, fm_bucket_width())
    ON CONFLICT DO NOTHING;
    SELECT b.confidence_q, b.confidence_n INTO q, n FROM rollup_buckets AS b
     WHERE b.model_version = p_model_version AND b.bucket_start = p_bucket_start
       AND b.bucket_width = fm_bucket_width()
     FOR UPDATE;
    SELECT m.q, m.n INTO q, n FROM fm_sparse_merge(q, n, p_confidence_q, p_confidence_n) AS m;
    UPDATE rollup_buckets AS b
       SET predictions = b.predictions + p_predictions,
           class_counts = fm_classes_add(b.class_counts, p_class_counts),
           confidence_q = q,
           confidence_n = n
     WHERE b.model_version = p_model_version AND b.bucket_start = p_bucket_start
       AND b.bucket_width = fm_bucket_width();
END $$;

-- The buckets a window [p_since, p_until) uses: every bucket of the version
-- (or of all versions when p_model_version is NULL) that overlaps the window,
-- after widening the window to those buckets' edges until it stops growing
-- (wide compacted buckets and late 60 s buckets may overlap each other).
CREATE FUNCTION fm_window_buckets(p_since timestamptz, p_until timestamptz, p_model_version text,
                                  OUT window_start timestamptz, OUT window_end timestamptz,
                                  OUT images bigint, OUT predictions bigint)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    s timestamptz;
    e timestamptz;
BEGIN
    window_start := p_since;
    window_end := p_until;
    LOOP
        SELECT least(window_start, min(b.bucket_start)), greatest(window_end, max(b.bucket_start + b.bucket_width)),
               coalesce(sum(b.images), 0), coalesce(sum(b.predictions), 0)
          INTO s, e, images, predictions
          FROM rollup_buckets AS b
         WHERE (p_model_version IS NULL OR b.model_version = p_model_version)
           AND b.bucket_start < window_end AND b.bucket_start + b.bucket_width > window_start;
        EXIT WHEN s = window_start AND e = window_end;
        window_start := s;
        window_end := e;
    END LOOP;
END $$;

-- Per-pixel value counts of the sampled images in the buckets that lie in
-- [p_since, p_until) (a window from fm_window_buckets), from the rollups.
CREATE FUNCTION fm_pixel_hist_window(p_since timestamptz, p_until timestamptz, p_model_version text)
RETURNS TABLE (pixel smallint, counts int8[])
LANGUAGE plpgsql STABLE SET jit = off AS $$
BEGIN
    RETURN QUERY EXECUTE format(
        'SELECT r.pixel, %s FROM pixel_rollups AS r
          WHERE ($3 IS NULL OR r.model_version = $3)
            AND r.bucket_start >= $1 AND r.bucket_start + r.bucket_width <= $2
          GROUP BY r.pixel ORDER BY r.pixel', fm_counts_sum_sql('r.counts'))
    USING p_since, p_until, p_model_version;
END $$;

-- The predictions of the same buckets as counts: per class (label 0..9) and
-- per confidence grid index q, from the rollups.
CREATE FUNCTION fm_prediction_hist_window(p_since timestamptz, p_until timestamptz, p_model_version text,
                                          OUT class_counts int8[], OUT confidence_q int4[],
                                          OUT confidence_n int8[])
LANGUAGE sql STABLE AS $$
    WITH b AS (
        SELECT * FROM rollup_buckets AS r
        WHERE (p_model_version IS NULL OR r.model_version = p_model_version)
          AND r.bucket_start >= p_since AND r.bucket_start + r.bucket_width <= p_until
    )
    SELECT (SELECT coalesce(array_agg(c.n ORDER BY c.k), '{0,0,0,0,0,0,0,0,0,0}')
            FROM (SELECT k.k, coalesce(sum(b.class_counts[k.k + 1]), 0)::int8 AS n
                  FROM generate_series(0, 9) AS k(k) LEFT JOIN b ON true GROUP BY k.k) AS c),
           coalesce(array_agg(x.q ORDER BY x.q), '{}'), coalesce(array_agg(x.n ORDER BY x.q), '{}')
    FROM (SELECT u.q, sum(u.n)::int8 AS n FROM b, unnest(b.confidence_q, b.confidence_n) AS u(q, n)
          GROUP BY u.q) AS x
$$;

-- The same counts recomputed from the raw rows with ts in [p_since, p_until)
-- (slow: 784 get_byte calls per image), for tests and for checking a
-- database by hand.
CREATE FUNCTION fm_pixel_hist_recompute(p_since timestamptz, p_until timestamptz, p_model_version text)
RETURNS TABLE (pixel smallint, counts int8[])
LANGUAGE sql STABLE AS $$
    WITH v AS (
        SELECT p.pixel, get_byte(s.pixels, p.pixel) AS value, count(*) AS n
        FROM sampled_inputs AS s, generate_series(0, 783) AS p(pixel)
        WHERE s.ts >= p_since AND s.ts < p_until
          AND (p_model_version IS NULL OR s.model_version = p_model_version)
        GROUP BY 1, 2
    )
    SELECT p.pixel::smallint,
           array_agg(coalesce(v.n, 0) ORDER BY x.value)
    FROM generate_series(0, 783) AS p(pixel)
    CROSS JOIN generate_series(0, 255) AS x(value)
    LEFT JOIN v ON v.pixel = p.pixel AND v.value = x.value
    GROUP BY p.pixel
    HAVING sum(v.n) > 0
    ORDER BY p.pixel
$$;

CREATE FUNCTION fm_prediction_hist_recompute(p_since timestamptz, p_until timestamptz, p_model_version text,
                                             OUT class_counts int8[], OUT confidence_q int4[],
                                             OUT confidence_n int8[])
LANGUAGE sql STABLE AS $$
    WITH p AS (
        SELECT * FROM predictions AS p
        WHERE p.ts >= p_since AND p.ts < p_until
          AND (p_model_version IS NULL OR p.model_version = p_model_version)
    )
    SELECT (SELECT array_agg((SELECT count(*) FROM p WHERE p.label = k.k)::int8 ORDER BY k.k)
            FROM generate_series(0, 9) AS k(k)),
           coalesce(array_agg(x.q ORDER BY x.q), '{}'), coalesce(array_agg(x.n ORDER BY x.q), '{}')
    FROM (SELECT fm_confidence_q(p.confidence) AS q, count(*)::int8 AS n FROM p GROUP BY 1) AS x
$$;

-- The six summary features of one image, the SQL twin of fm_pixel_features()
-- (host/store/fm_pixel_stats.h). S = Σp and Q = Σp² over the 784 pixels:
--   mean_intensity = S/784                      (exact: a grid of 1/784)
--   std_intensity  = round(100·sqrt((784·Q - S²)/784²)) / 100
--   nonzero_share  = #(p > 0)/784,  bright_share = #(p >= 128)/784
--   centroid_row   = round(100·Σ row·p / S) / 100  (13.5 when S = 0)
--   centroid_col   = round(100·Σ col·p / S) / 100  (13.5 when S = 0)
-- Each is computed from exact integer sums by the same correctly rounded
-- IEEE operations in C, SQL and numpy, so all three agree to the last bit.
-- Rounding to 0.01 (half to even) keeps a window's distinct values few.
CREATE FUNCTION fm_image_features(p_pixels bytea,
    OUT mean_intensity float8, OUT std_intensity float8, OUT nonzero_share float8,
    OUT bright_share float8, OUT centroid_row float8, OUT centroid_col float8)
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT t.s::float8 / 784,
           round(sqrt((784 * t.q - t.s * t.s)::float8 / 614656) * 100) / 100,
           t.nz::float8 / 784,
           t.br::float8 / 784,
           CASE WHEN t.s > 0 THEN round(t.sr::float8 / t.s * 100) / 100 ELSE 13.5 END,
           CASE WHEN t.s > 0 THEN round(t.sc::float8 / t.s * 100) / 100 ELSE 13.5 END
    FROM (SELECT sum(b)::bigint AS s, sum(b * b)::bigint AS q,
                 count(*) FILTER (WHERE b > 0) AS nz, count(*) FILTER (WHERE b >= 128) AS br,
                 sum((i / 28) * b)::bigint AS sr, sum((i % 28) * b)::bigint AS sc
          FROM (SELECT i, get_byte(p_pixels, i)::bigint AS b FROM generate_series(0, 783) AS i) AS px) AS t
$$;

-- Merges every bucket narrower than p_width whose enclosing p_width bucket
-- ended at least p_older_than before p_now into that wider bucket. Keeps the
-- number of buckets a long window reads small: with the schedule in
-- docs/database.md (60 s → 1 h after 2 h, 1 h → 1 day after 2 days) a
-- 24-hour window reads at most ~150 buckets instead of 1440. Returns the
-- number of buckets it removed. Safe while writers write: they write recent
-- 60 s buckets, and a late delta for an old bucket is merged next time.
CREATE FUNCTION fm_rollup_compact(p_width interval DEFAULT interval '1 hour',
                                  p_older_than interval DEFAULT interval '2 hours',
                                  p_now timestamptz DEFAULT now())
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    merged integer;
    cutoff timestamptz := p_now - p_older_than;
BEGIN
    IF p_width <= fm_bucket_width() THEN
        RAISE EXCEPTION 'fm_rollup_compact: width % must be wider than the % ingestion buckets', p_width, fm_bucket_width();
    END IF;
    -- One compaction at a time; a second one waits, then finds nothing to do.
    PERFORM pg_advisory_xact_lock(hashtext('fm_rollup_compact'));
    EXECUTE format($q$
        WITH moved AS (
            DELETE FROM pixel_rollups AS r
             WHERE r.bucket_width < $1
               AND date_bin($1, r.bucket_start, fm_bucket_origin()) + $1 <= $2
            RETURNING r.*
        )
        INSERT INTO pixel_rollups AS r (model_version, bucket_start, bucket_width, pixel, counts)
        SELECT m.model_version, date_bin($1, m.bucket_start, fm_bucket_origin()), $1, m.pixel, %s::int4[]
        FROM moved AS m
        GROUP BY 1, 2, 4
        ORDER BY 1, 2, 4
        ON CONFLICT (model_version, bucket_start, bucket_width, pixel)
        DO UPDATE SET counts = fm_counts_add(r.counts, excluded.counts)
    $q$, fm_counts_sum_sql('m.counts')) USING p_width, cutoff;

    CREATE TEMP TABLE fm_compact_moved ON COMMIT DROP AS
    WITH moved AS (
        DELETE FROM rollup_buckets AS b
         WHERE b.bucket_width < p_width
           AND date_bin(p_width, b.bucket_start, fm_bucket_origin()) + p_width <= cutoff
        RETURNING b.*
    )
    SELECT * FROM moved;
    GET DIAGNOSTICS merged = ROW_COUNT;
    -- Wide buckets that already exist (from an earlier compaction of late
    -- data) are merged in too.
    WITH target AS (
        SELECT DISTINCT m.model_version, date_bin(p_width, m.bucket_start, fm_bucket_origin()) AS bucket_start
        FROM fm_compact_moved AS m
    ), old AS (
        DELETE FROM rollup_buckets AS b USING target AS t
         WHERE b.model_version = t.model_version AND b.bucket_start = t.bucket_start AND b.bucket_width = p_width
        RETURNING b.*
    ), parts AS (
        SELECT m.model_version, date_bin(p_width, m.bucket_start, fm_bucket_origin()) AS bucket_start,
               m.images, m.predictions, m.class_counts, m.confidence_q, m.confidence_n
        FROM fm_compact_moved AS m
        UNION ALL
        SELECT o.model_version, o.bucket_start, o.images, o.predictions, o.class_counts, o.confidence_q,
               o.confidence_n
        FROM old AS o
    ), conf AS (
        SELECT p.model_version, p.bucket_start, u.q, sum(u.n)::int8 AS n
        FROM parts AS p, unnest(p.confidence_q, p.confidence_n) AS u(q, n)
        GROUP BY 1, 2, 3
    )
    INSERT INTO rollup_buckets (model_version, bucket_start, bucket_width, images, predictions, class_counts,
                                confidence_q, confidence_n)
    SELECT p.model_version, p.bucket_start, p_width, sum(p.images), sum(p.predictions),
           ARRAY[sum(p.class_counts[1]), sum(p.class_counts[2]), sum(p.class_counts[3]), sum(p.class_counts[4]),
                 sum(p.class_counts[5]), sum(p.class_counts[6]), sum(p.class_counts[7]), sum(p.class_counts[8]),
                 sum(p.class_counts[9]), sum(p.class_counts[10])]::int8[],
           coalesce((SELECT array_agg(c.q ORDER BY c.q) FROM conf AS c
                     WHERE c.model_version = p.model_version AND c.bucket_start = p.bucket_start), '{}'),
           coalesce((SELECT array_agg(c.n ORDER BY c.q) FROM conf AS c
                     WHERE c.model_version = p.model_version AND c.bucket_start = p.bucket_start), '{}')
    FROM parts AS p
    GROUP BY p.model_version, p.bucket_start;
    DROP TABLE fm_compact_moved;
    RETURN merged;
END $$;

-- Rebuilds the rollups of every 60 s bucket in [p_since, p_until) from the raw
-- rows (after a writer crashed with deltas still in memory, or to check a
-- database): removes the range's rollup rows and writes 60 s buckets again.
-- Slow (784 get_byte calls per image); run it on the damaged range only.
-- Returns the number of buckets written.
CREATE FUNCTION fm_rollup_rebuild(p_since timestamptz, p_until timestamptz)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    s timestamptz := fm_bucket_start(p_since);
    e timestamptz := fm_bucket_start(p_until - interval '1 microsecond') + fm_bucket_width();
    n integer;
BEGIN
    IF EXISTS (SELECT 1 FROM rollup_buckets AS b
               WHERE b.bucket_start < e AND b.bucket_start + b.bucket_width > s
                 AND (b.bucket_start < s OR b.bucket_start + b.bucket_width > e)) THEN
        RAISE EXCEPTION 'fm_rollup_rebuild: [%, %) cuts through a compacted bucket; widen it to whole buckets', s, e;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('fm_rollup_compact'));
    DELETE FROM pixel_rollups AS r WHERE r.bucket_start >= s AND r.bucket_start < e;
    DELETE FROM rollup_buckets AS b WHERE b.bucket_start >= s AND b.bucket_start < e;
    WITH keys AS (
        SELECT p.model_version, fm_bucket_start(p.ts) AS bucket_start FROM predictions AS p
        WHERE p.ts >= s AND p.ts < e GROUP BY 1, 2
        UNION
        SELECT si.model_version, fm_bucket_start(si.ts) FROM sampled_inputs AS si
        WHERE si.ts >= s AND si.ts < e GROUP BY 1, 2
    )
    INSERT INTO rollup_buckets (model_version, bucket_start, bucket_width, images, predictions, class_counts,
                                confidence_q, confidence_n)
    SELECT k.model_version, k.bucket_start, fm_bucket_width(),
           (SELECT count(*) FROM sampled_inputs AS si
             WHERE si.model_version = k.model_version AND si.ts >= k.bucket_start
               AND si.ts < k.bucket_start + fm_bucket_width()),
           h.predictions, h.class_counts, h.confidence_q, h.confidence_n
    FROM keys AS k,
         LATERAL (SELECT (SELECT sum(x) FROM unnest(r.class_counts) AS x)::int8 AS predictions, r.*
                  FROM fm_prediction_hist_recompute(k.bucket_start, k.bucket_start + fm_bucket_width(),
                                                    k.model_version) AS r) AS h;
    GET DIAGNOSTICS n = ROW_COUNT;
    INSERT INTO pixel_rollups (model_version, bucket_start, bucket_width, pixel, counts)
    SELECT b.model_version, b.bucket_start, fm_bucket_width(), h.pixel, h.counts::int4[]
    FROM rollup_buckets AS b,
         LATERAL fm_pixel_hist_recompute(b.bucket_start, b.bucket_start + fm_bucket_width(), b.model_version) AS h
    WHERE b.bucket_start >= s AND b.bucket_start < e AND b.images > 0;
    RETURN n;
END $$;
