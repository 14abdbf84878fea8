-- 006_ingest.sql: exactly-once ingestion for the server's prediction-log
-- writer (host/store/fm_pg_writer.c; protocol in docs/database.md).
--
-- Every unit of work the writer commits (a batch of predictions with its
-- sampled inputs, a rollup delta, a batch of feedback) carries a UUID chosen
-- before its first attempt and kept across retries, spooling and restarts.
-- The unit's transaction first inserts that id here: when the id is already
-- present, an earlier attempt committed (its outcome was unknown to the
-- writer: the connection broke during COMMIT, or the process died before it
-- could note the success) and the unit is skipped. So a unit is applied at
-- most once, and because the writer retries it until it is, exactly once.

CREATE TABLE ingested_batches (
    batch_id     uuid        NOT NULL,
    kind         text        NOT NULL,
    rows         integer     NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ingested_batches_pk PRIMARY KEY (batch_id),
    CONSTRAINT ingested_batches_kind_ck CHECK (kind IN ('predictions', 'rollup', 'feedback')),
    CONSTRAINT ingested_batches_rows_ck CHECK (rows >= 0)
);
-- Ids are UUIDv7s (time-ordered), so the primary key appends on the right.
CREATE INDEX ingested_batches_committed_brin ON ingested_batches USING brin (committed_at);

-- Forgets ids committed before `older_than` ago. Safe once no spool file
-- that old can still be replayed (a spool is replayed as soon as PostgreSQL
-- is reachable again; keep at least the longest outage you plan for).
-- Returns how many ids were removed.
CREATE FUNCTION fm_ingested_batches_prune(p_older_than interval DEFAULT interval '30 days')
RETURNS bigint LANGUAGE sql AS $$
    WITH d AS (DELETE FROM ingested_batches WHERE committed_at < now() - p_older_than RETURNING 1)
    SELECT count(*) FROM d;
$$;

-- Writes a batch of feedback (the feedback RPC, through the writer): one
-- element per label in each array. The latest label of an image wins, by
-- the time the server received it, so a batch replayed late from the spool
-- never overwrites a newer word. Returns the rows inserted or updated.
CREATE FUNCTION fm_feedback_ingest(p_request_ids uuid[], p_image_index smallint[], p_labels smallint[],
                                   p_received_at timestamptz[], p_sources text[])
RETURNS integer LANGUAGE sql AS $$
    WITH input AS (
        SELECT DISTINCT ON (r, i) r, i, l, t, s
        FROM unnest(p_request_ids, p_image_index, p_labels, p_received_at, p_sources) AS u(r, i, l, t, s)
        ORDER BY r, i, t DESC
    ), up AS (
        INSERT INTO feedback AS f (request_id, image_index, label, received_at, source)
        SELECT r, i, l, t, s FROM input
        ON CONFLICT (request_id, image_index) DO UPDATE
            SET label = excluded.label, source = excluded.source, received_at = excluded.received_at
            WHERE f.received_at <= excluded.received_at
        RETURNING 1
    )
    SELECT count(*)::integer FROM up;
$$;
