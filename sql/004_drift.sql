-- 004_drift.sql: a drift check run inside the database. fm_drift_run() gathers
-- the reference profile and a window of logged data as value/count pairs per
-- feature, runs fm_drift_stats() (002), stores the run and every feature's
-- result, applies Evidently's dataset rule (share of drifted features >= 0.5)
-- and, on dataset drift, sends NOTIFY fm_drift with a JSON payload.

-- Feature ids: 0..783 the pixels (row*28 + col), 1000..1005 the summary
-- features in the order of sampled_inputs' columns, 2000 the predicted class,
-- 2001 the confidence.
CREATE FUNCTION fm_feature_name(fid integer) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE
        WHEN fid BETWEEN 0 AND 783 THEN format('px_%s_%s', lpad((fid / 28)::text, 2, '0'), lpad((fid % 28)::text, 2, '0'))
        WHEN fid BETWEEN 1000 AND 1005 THEN (ARRAY['mean_intensity', 'std_intensity', 'nonzero_share',
                                                   'bright_share', 'centroid_row', 'centroid_col'])[fid - 999]
        WHEN fid = 2000 THEN 'pred_class'
        WHEN fid = 2001 THEN 'confidence'
    END
$$;

CREATE FUNCTION fm_feature_group(fid integer) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN fid BETWEEN 0 AND 783 THEN 'pixel'
                WHEN fid BETWEEN 1000 AND 1005 THEN 'summary'
                ELSE 'prediction' END
$$;

-- How far a result is past its threshold, comparable across tests: the
-- ratio score/threshold for distances, -ln(p)/-ln(threshold) for p-values.
-- Above 1 means drifted (at exactly 1 a distance drifts, a chi-square or z
-- p-value does not). Used to rank the "top drifted features".
CREATE FUNCTION fm_drift_strength(stattest text, score float8, threshold float8) RETURNS float8
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN stattest IN ('ks', 'chisquare', 'z')
                THEN -ln(greatest(score, 1e-300)) / -ln(least(greatest(threshold, 1e-300), 0.999999))
                ELSE score / greatest(threshold, 1e-300) END
$$;

-- Runs one drift check and returns its drift_runs.id.
--   p_since, p_until    the window [p_since, p_until); widened to whole rollup
--                       buckets (window_start/window_end of the run)
--   p_model_version     only this version's traffic; NULL for all versions
--   p_reference_id      a reference_profiles.id; NULL for the newest
--   p_*_stattest        force a test for numerical / categorical columns
--   p_*_threshold       override the tests' default thresholds
--   p_drift_share       the dataset rule's share (Evidently's default 0.5)
-- Raises an error (SQLSTATE P0002, no_data_found) when there is no reference
-- profile or the window holds no sampled images or no predictions.
CREATE FUNCTION fm_drift_run(
    p_since timestamptz,
    p_until timestamptz,
    p_model_version text DEFAULT NULL,
    p_reference_id bigint DEFAULT NULL,
    p_num_stattest text DEFAULT NULL,
    p_cat_stattest text DEFAULT NULL,
    p_num_threshold float8 DEFAULT NULL,
    p_cat_threshold float8 DEFAULT NULL,
    p_drift_share float8 DEFAULT 0.5)
RETURNS bigint LANGUAGE plpgsql VOLATILE SET jit = off AS $$
DECLARE
    ref_id bigint;
    w record;
    ph record;
    n_pred bigint;
    v_run bigint;
    n_features integer;
    n_drifted integer;
    v_share float8;
    v_drift boolean;
    payload text;
BEGIN
    IF p_since IS NULL OR p_until IS NULL OR p_since >= p_until THEN
        RAISE EXCEPTION 'fm_drift_run: the window [%, %) is empty', p_since, p_until;
    END IF;
    IF p_drift_share IS NULL OR p_drift_share <= 0 OR p_drift_share > 1 THEN
        RAISE EXCEPTION 'fm_drift_run: drift share % is not in (0, 1]', p_drift_share;
    END IF;
    IF p_reference_id IS NULL THEN
        SELECT max(id) INTO ref_id FROM reference_profiles;
        IF ref_id IS NULL THEN
            RAISE EXCEPTION 'fm_drift_run: no reference profile; create one with fmctl drift reference'
                USING ERRCODE = 'no_data_found';
        END IF;
    ELSE
        SELECT id INTO ref_id FROM reference_profiles WHERE id = p_reference_id;
        IF ref_id IS NULL THEN
            RAISE EXCEPTION 'fm_drift_run: reference profile % does not exist', p_reference_id
                USING ERRCODE = 'no_data_found';
        END IF;
    END IF;

    -- The check sorts and hashes a few hundred thousand values: give this
    -- transaction enough memory to do that without spilling to disk.
    IF pg_size_bytes(current_setting('work_mem')) < pg_size_bytes('256MB') THEN
        PERFORM set_config('work_mem', '256MB', true);
    END IF;

    w := fm_window_buckets(p_since, p_until, p_model_version);
    n_pred := w.predictions;
    IF w.images = 0 OR n_pred = 0 THEN
        RAISE EXCEPTION 'fm_drift_run: the window [%, %)% holds % sampled images and % predictions; nothing to compare',
            w.window_start, w.window_end,
            CASE WHEN p_model_version IS NULL THEN '' ELSE format(' of version %s', p_model_version) END,
            w.images, n_pred
            USING ERRCODE = 'no_data_found';
    END IF;

    ph := fm_prediction_hist_window(w.window_start, w.window_end, p_model_version);

    -- Every feature as (fid, is_cat, value, reference count, current count).
    DROP TABLE IF EXISTS pg_temp.fm_dr_input;
    CREATE TEMP TABLE fm_dr_input (fid integer, is_cat boolean, value float8, r float8, c float8) ON COMMIT DROP;

    -- Pixels: the reference's 256-bin histograms against the window's rollups.
    INSERT INTO fm_dr_input
    SELECT rh.pixel, false, (u.o - 1)::float8, u.r::float8, u.c::float8
    FROM reference_pixel_hist AS rh
    JOIN fm_pixel_hist_window(w.window_start, w.window_end, p_model_version) AS cur ON cur.pixel = rh.pixel
    CROSS JOIN LATERAL unnest(rh.counts, cur.counts) WITH ORDINALITY AS u(r, c, o)
    WHERE rh.profile_id = ref_id AND u.r + u.c > 0;

    -- Summary features, predicted class and confidence: value/count lists.
    -- The confidence is compared on the grid the rollups count it on,
    -- round(c·10000)/10000: exact Wasserstein over a million distinct float4
    -- values would mean sorting them all for every check; on the grid the
    -- distance moves by at most 0.5e-4 from the raw-value one (docs/drift.md).
    INSERT INTO fm_dr_input
    SELECT x.fid, x.fid = 2000, x.value, sum(x.r), sum(x.c)
    FROM (
        SELECT CASE rv.feature WHEN 'mean_intensity' THEN 1000 WHEN 'std_intensity' THEN 1001
                               WHEN 'nonzero_share' THEN 1002 WHEN 'bright_share' THEN 1003
                               WHEN 'centroid_row' THEN 1004 WHEN 'centroid_col' THEN 1005
                               WHEN 'pred_class' THEN 2000 WHEN 'confidence' THEN 2001 END AS fid,
               CASE WHEN rv.feature = 'confidence' THEN fm_confidence_q(rv.value)::float8 / 10000
                    ELSE rv.value END AS value,
               rv.count::float8 AS r, 0::float8 AS c
        FROM reference_values AS rv WHERE rv.profile_id = ref_id
        UNION ALL
        -- One scan, one hash table per feature (GROUPING SETS is several
        -- times faster here than unpivoting the six columns into rows).
        SELECT CASE WHEN GROUPING(s.mean_intensity) = 0 THEN 1000 WHEN GROUPING(s.std_intensity) = 0 THEN 1001
                    WHEN GROUPING(s.nonzero_share) = 0 THEN 1002 WHEN GROUPING(s.bright_share) = 0 THEN 1003
                    WHEN GROUPING(s.centroid_row) = 0 THEN 1004 ELSE 1005 END,
               coalesce(s.mean_intensity, s.std_intensity, s.nonzero_share, s.bright_share, s.centroid_row,
                        s.centroid_col),
               0, count(*)
        FROM sampled_inputs AS s
        WHERE s.ts >= w.window_start AND s.ts < w.window_end
          AND (p_model_version IS NULL OR s.model_version = p_model_version)
        GROUP BY GROUPING SETS ((s.mean_intensity), (s.std_intensity), (s.nonzero_share), (s.bright_share),
                                (s.centroid_row), (s.centroid_col))
        UNION ALL
        SELECT 2000, u.k - 1, 0, u.n
        FROM unnest(ph.class_counts) WITH ORDINALITY AS u(n, k)
        WHERE u.n > 0
        UNION ALL
        SELECT 2001, u.q::float8 / 10000, 0, u.n
        FROM unnest(ph.confidence_q, ph.confidence_n) AS u(q, n)
    ) AS x
    WHERE x.fid IS NOT NULL
    GROUP BY x.fid, x.value;

    INSERT INTO drift_runs (reference_id, model_version, requested_start, requested_end, window_start, window_end,
                            images, predictions, features, drifted, share, drift_share, dataset_drift, options)
    VALUES (ref_id, p_model_version, p_since, p_until, w.window_start, w.window_end, w.images, n_pred,
            0, 0, 0, p_drift_share, false,
            jsonb_strip_nulls(jsonb_build_object('num_stattest', p_num_stattest, 'cat_stattest', p_cat_stattest,
                                                 'num_threshold', p_num_threshold, 'cat_threshold', p_cat_threshold)))
    RETURNING id INTO v_run;

    INSERT INTO drift_results (run_id, feature_id, feature, feature_group, column_type, stattest, score, threshold,
                               drifted, p_value, statistic, n_ref, n_cur, n_values)
    SELECT v_run, s.fid, fm_feature_name(s.fid), fm_feature_group(s.fid), s.column_type, s.stattest, s.score,
           s.threshold, s.drifted, s.p_value, s.statistic, s.n_ref, s.n_cur, s.n_values
    FROM fm_drift_stats('pg_temp.fm_dr_input', p_num_stattest, p_cat_stattest, p_num_threshold, p_cat_threshold) AS s;

    -- Evidently's get_dataset_drift: every tested column has one vote.
    SELECT count(*), count(*) FILTER (WHERE r.drifted) INTO n_features, n_drifted
    FROM drift_results AS r WHERE r.run_id = v_run;
    v_share := CASE WHEN n_features > 0 THEN n_drifted::float8 / n_features ELSE 0 END;
    v_drift := n_features > 0 AND v_share >= p_drift_share;
    UPDATE drift_runs SET features = n_features, drifted = n_drifted, share = v_share, dataset_drift = v_drift,
                          finished_at = clock_timestamp()
    WHERE id = v_run;

    IF v_drift THEN
        SELECT json_build_object(
                   'run_id', v_run, 'reference_id', ref_id, 'model_version', p_model_version,
                   'window_start', w.window_start, 'window_end', w.window_end,
                   'features', n_features, 'drifted', n_drifted, 'share', v_share, 'drift_share', p_drift_share,
                   'top', coalesce((SELECT json_agg(json_build_object('feature', t.feature, 'stattest', t.stattest,
                                                                    'score', t.score, 'threshold', t.threshold))
                                    FROM (SELECT r.feature, r.stattest, r.score, r.threshold
                                          FROM drift_results AS r
                                          WHERE r.run_id = v_run AND r.drifted
                                          ORDER BY fm_drift_strength(r.stattest, r.score, r.threshold) DESC, r.feature_id
                                          LIMIT 5) AS t), '[]'::json))::text
          INTO payload;
        PERFORM pg_notify('fm_drift', payload);
    END IF;
    RETURN v_run;
END $$;
