-- 001_schema.sql: the tables fmserve logs into and drift checks read from.
-- Predictions and sampled inputs are written by the server with COPY (row
-- formats in docs/database.md); rollups, references and drift runs are
-- maintained by the functions of the later migrations.

CREATE TYPE fm_model_role AS ENUM ('stable', 'canary');
CREATE TYPE fm_route AS ENUM ('ab', 'pinned', 'sticky');

-- One row per classified image. A request carrying several images gives
-- several rows with image_index 0, 1, ... The primary key is also the link
-- for sampled inputs and feedback. Request ids are the UUIDv7s the server
-- hands to clients (RFC 9562: 48 bits of Unix milliseconds first), so they
-- grow with time and the primary key's index is appended to on the right,
-- which keeps it cheap at high insert rates.
CREATE TABLE predictions (
    request_id    uuid          NOT NULL,
    image_index   smallint      NOT NULL,
    ts            timestamptz   NOT NULL,
    model_role    fm_model_role NOT NULL,
    model_version text          NOT NULL,
    route         fm_route      NOT NULL,
    label         smallint      NOT NULL,
    confidence    real          NOT NULL,
    probs         real[]        NOT NULL,
    queue_us      integer       NOT NULL,
    compute_us    integer       NOT NULL,
    total_us      integer       NOT NULL,
    CONSTRAINT predictions_pk PRIMARY KEY (request_id, image_index),
    CONSTRAINT predictions_image_index_ck CHECK (image_index >= 0),
    CONSTRAINT predictions_label_ck CHECK (label BETWEEN 0 AND 9),
    CONSTRAINT predictions_confidence_ck CHECK (confidence >= 0 AND confidence <= 1),
    CONSTRAINT predictions_probs_ck CHECK (array_ndims(probs) = 1 AND cardinality(probs) = 10),
    CONSTRAINT predictions_latency_ck CHECK (queue_us >= 0 AND compute_us >= 0 AND total_us >= 0)
);
-- Rows arrive in time order, so a BRIN index finds a time window's pages for
-- a few kilobytes of index and no cost on the insert path.
CREATE INDEX predictions_ts_brin ON predictions USING brin (ts);

-- The raw bytes of a sample of the classified images, with the per-image
-- summary features computed at ingestion by fm_pixel_features() (host/store/
-- fm_pixel_stats.c; the SQL twin is fm_image_features() in 003): the
-- continuous ones (std, centroids) are rounded to 0.01 so that a window holds
-- few distinct values. ts and model_version repeat the prediction's so that
-- windows need no join.
CREATE TABLE sampled_inputs (
    request_id     uuid        NOT NULL,
    image_index    smallint    NOT NULL,
    ts             timestamptz NOT NULL,
    model_version  text        NOT NULL,
    pixels         bytea       NOT NULL,
    mean_intensity float8      NOT NULL,
    std_intensity  float8      NOT NULL,
    nonzero_share  float8      NOT NULL,
    bright_share   float8      NOT NULL,
    centroid_row   float8      NOT NULL,
    centroid_col   float8      NOT NULL,
    CONSTRAINT sampled_inputs_pk PRIMARY KEY (request_id, image_index),
    CONSTRAINT sampled_inputs_prediction_fk FOREIGN KEY (request_id, image_index)
        REFERENCES predictions (request_id, image_index) ON DELETE CASCADE,
    CONSTRAINT sampled_inputs_pixels_ck CHECK (length(pixels) = 784)
);
CREATE INDEX sampled_inputs_ts_brin ON sampled_inputs USING brin (ts);

-- Ground truth sent back by clients (the feedback RPC) for a request they
-- were answered for. No foreign key, because the two arrive independently:
-- the prediction's row may reach the table after its feedback (the writer
-- batches rows, spools them while PostgreSQL is away and replays them when
-- it returns; another replica's writer may be behind), and the feedback
-- must not be refused or lost meanwhile. Joins find the pair once both are
-- in. received_at is when the server received the feedback.
CREATE TABLE feedback (
    request_id  uuid        NOT NULL,
    image_index smallint    NOT NULL DEFAULT 0,
    label       smallint    NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    source      text,
    CONSTRAINT feedback_pk PRIMARY KEY (request_id, image_index),
    CONSTRAINT feedback_image_index_ck CHECK (image_index >= 0),
    CONSTRAINT feedback_label_ck CHECK (label BETWEEN 0 AND 9)
);

-- Per-pixel value counts of the sampled inputs, per model version and time
-- bucket (60 s when written, merged into wider buckets by fm_rollup_compact).
-- counts[v + 1] is how many sampled images had value v at this pixel.
CREATE TABLE pixel_rollups (
    model_version text        NOT NULL,
    bucket_start  timestamptz NOT NULL,
    bucket_width  interval    NOT NULL,
    pixel         smallint    NOT NULL,
    counts        int4[]      NOT NULL,
    CONSTRAINT pixel_rollups_pk PRIMARY KEY (model_version, bucket_start, bucket_width, pixel),
    CONSTRAINT pixel_rollups_pixel_ck CHECK (pixel BETWEEN 0 AND 783),
    CONSTRAINT pixel_rollups_counts_ck CHECK (array_ndims(counts) = 1 AND cardinality(counts) = 256)
);

-- One row per rollup bucket: how many sampled images its pixel_rollups rows
-- count, and the bucket's predictions as counts: per predicted class, and
-- per confidence on the grid round(confidence·10000) (sparse: the grid
-- indexes with a count, ascending, and their counts). Drift checks read the
-- model's outputs from here, never from the (much larger) predictions table.
CREATE TABLE rollup_buckets (
    model_version text        NOT NULL,
    bucket_start  timestamptz NOT NULL,
    bucket_width  interval    NOT NULL,
    images        bigint      NOT NULL DEFAULT 0,
    predictions   bigint      NOT NULL DEFAULT 0,
    class_counts  int8[]      NOT NULL DEFAULT '{0,0,0,0,0,0,0,0,0,0}',
    confidence_q  int4[]      NOT NULL DEFAULT '{}',
    confidence_n  int8[]      NOT NULL DEFAULT '{}',
    CONSTRAINT rollup_buckets_pk PRIMARY KEY (model_version, bucket_start, bucket_width),
    CONSTRAINT rollup_buckets_counts_ck CHECK (images >= 0 AND predictions >= 0),
    CONSTRAINT rollup_buckets_classes_ck CHECK (array_ndims(class_counts) = 1 AND cardinality(class_counts) = 10),
    CONSTRAINT rollup_buckets_confidence_ck CHECK (cardinality(confidence_q) = cardinality(confidence_n))
);

-- What "normal" looks like: computed once from a training set and a model by
-- `fmctl drift reference`.
CREATE TABLE reference_profiles (
    id            bigserial   PRIMARY KEY,
    created_at    timestamptz NOT NULL DEFAULT now(),
    description   text,
    data_source   text        NOT NULL,  -- the images file it was computed from
    data_sha256   text        NOT NULL,  -- fm_dataset_t.sha256 of the training set
    images        integer     NOT NULL,
    model_name    text,
    model_version text,
    model_sha256  text,                  -- SHA-256 of model.safetensors
    CONSTRAINT reference_profiles_images_ck CHECK (images > 0)
);

-- The reference's per-pixel 256-bin histograms (same layout as pixel_rollups).
CREATE TABLE reference_pixel_hist (
    profile_id bigint   NOT NULL REFERENCES reference_profiles (id) ON DELETE CASCADE,
    pixel      smallint NOT NULL,
    counts     int4[]   NOT NULL,
    CONSTRAINT reference_pixel_hist_pk PRIMARY KEY (profile_id, pixel),
    CONSTRAINT reference_pixel_hist_pixel_ck CHECK (pixel BETWEEN 0 AND 783),
    CONSTRAINT reference_pixel_hist_counts_ck CHECK (array_ndims(counts) = 1 AND cardinality(counts) = 256)
);

-- The reference's other features as value/count pairs: the six summary
-- features, the model's predicted class ('pred_class', values 0..9) and its
-- confidence ('confidence', the float4 value widened to float8).
CREATE TABLE reference_values (
    profile_id bigint NOT NULL REFERENCES reference_profiles (id) ON DELETE CASCADE,
    feature    text   NOT NULL,
    value      float8 NOT NULL,
    count      bigint NOT NULL,
    CONSTRAINT reference_values_pk PRIMARY KEY (profile_id, feature, value),
    CONSTRAINT reference_values_count_ck CHECK (count > 0)
);

-- One row per drift check; window_* is the window actually used (widened to
-- whole rollup buckets), requested_* what was asked for.
CREATE TABLE drift_runs (
    id              bigserial   PRIMARY KEY,
    started_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at     timestamptz,
    reference_id    bigint      NOT NULL REFERENCES reference_profiles (id),
    model_version   text,                 -- NULL: every version
    requested_start timestamptz NOT NULL,
    requested_end   timestamptz NOT NULL,
    window_start    timestamptz NOT NULL,
    window_end      timestamptz NOT NULL,
    images          bigint      NOT NULL, -- sampled images in the window
    predictions     bigint      NOT NULL, -- predictions in the window
    features        integer     NOT NULL, -- columns tested
    drifted         integer     NOT NULL, -- columns that drifted
    share           float8      NOT NULL, -- drifted / features
    drift_share     float8      NOT NULL, -- the dataset threshold (0.5)
    dataset_drift   boolean     NOT NULL, -- share >= drift_share
    options         jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX drift_runs_started_at ON drift_runs (started_at);

-- Every tested column of a run. score is what the threshold is compared
-- with: the p-value for ks/chisquare/z, the distance for wasserstein/
-- jensenshannon/psi/kl_div. statistic is the test's own statistic (K-S D,
-- chi-square, z, W1 before norming, ...).
CREATE TABLE drift_results (
    run_id        bigint   NOT NULL REFERENCES drift_runs (id) ON DELETE CASCADE,
    feature_id    integer  NOT NULL,  -- 0..783 pixels, 1000+ summary, 2000 pred_class, 2001 confidence
    feature       text     NOT NULL,  -- px_RR_CC, mean_intensity, ..., pred_class, confidence
    feature_group text     NOT NULL,  -- pixel | summary | prediction
    column_type   text     NOT NULL,  -- num | cat
    stattest      text     NOT NULL,  -- ks | chisquare | z | wasserstein | jensenshannon | psi | kl_div
    score         float8   NOT NULL,
    threshold     float8   NOT NULL,
    drifted       boolean  NOT NULL,
    p_value       float8,
    statistic     float8,
    n_ref         bigint   NOT NULL,
    n_cur         bigint   NOT NULL,
    n_values      integer  NOT NULL,  -- distinct values in reference and current together
    CONSTRAINT drift_results_pk PRIMARY KEY (run_id, feature_id)
);
