/* fm_pg_writer.c: the server's prediction log (see fm_pg_writer.h): the
 * loop-side sink that fills a bounded buffer of batches, the database
 * threads that write them (the first also replays the spool), and the spool
 * thread that moves them to local disk when the database cannot take them. */
#include "fm_thread.h"
#include "fm_pg_writer.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "fm_db.h"
#include "fm_error.h"
#include "fm_log.h"
#include "fm_log_codec.h"
#include "fm_spool.h"
#include "fm_store_sync.h"
#include "fm_time.h"
#include "fm_uuid.h"

/* What a batch holds, for counters: predictions, sampled inputs, feedback. */
enum { K_PRED = 0, K_SAMPLED = 1, K_FEEDBACK = 2, NKINDS = 3 };
static const char *const kind_names[NKINDS] = {"prediction", "sampled_input", "feedback"};

/* Why rows were dropped. */
enum { DROP_BUFFER_FULL, DROP_SPOOL_FULL, DROP_SPOOL_ERROR, DROP_NO_SPOOL, DROP_REJECTED, DROP_INVALID, NDROPS };
static const char *const drop_names[NDROPS] = {"buffer_full", "spool_full", "spool_error",
                                               "no_spool",    "rejected",   "invalid"};

#define LAT_BUCKETS 14
static const double lat_bounds_s[LAT_BUCKETS - 1] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                     0.25,  0.5,    1,     2.5,  5,    10};

/* A batch: the bytes of fm_log_codec.h, in memory or on its way to disk. */
typedef struct chunk {
    struct chunk *next;
    uint32_t type; /* FM_LOGC_PREDICTIONS or FM_LOGC_FEEDBACK */
    uint8_t id[16];
    uint8_t *data;
    size_t len, cap;
    uint32_t rows, sampled;
    uint64_t born_us; /* monotonic time of its first row */
} chunk_t;

typedef struct stats {
    uint64_t written[NKINDS], spooled[NKINDS], replayed[NKINDS];
    uint64_t dropped[NKINDS][NDROPS];
    uint64_t not_logged; /* requests left out by log_predictions */
    uint64_t committed, duplicate, failed;
    uint64_t lat_hist[LAT_BUCKETS];
    double lat_sum_s;
    uint64_t lat_count;
    uint64_t connect_failures;
    int64_t last_error_wall_us;
    int pending_deltas;
    fm_spool_stats_t spool; /* a copy, refreshed by the threads that use the spool */
} stats_t;

typedef struct pg_writer pg_writer_t;

/* One database connection and the thread that drives it. Batches are spread
 * over these (PostgreSQL parses each connection's COPY on one core); each
 * keeps the rollup deltas of the rows it committed. */
typedef struct dbt {
    pg_writer_t *w;
    int index;
    pthread_t thread;
    int started, up;
    fm_db_t *db; /* guarded by w->db_mu against fm_db_interrupt */
    fm_store_writer_t *sw;
    fm_logc_rows_t dec;
    fm_pixel_hist_t *dh;
    fm_pred_hist_t *dph;
    int pending;                   /* its pending deltas (under mu) */
    int64_t mark_first, mark_last; /* their bucket range (under mark_mu) */
} dbt_t;

struct pg_writer {
    fm_sink_t sink; /* first member: the callbacks cast back */
    fm_pg_writer_config_t cfg;
    char *url, *spool_dir;
    size_t chunk_bytes;

    pthread_mutex_t mu; /* everything below up to the threads' own state */
    pthread_cond_t db_cv, spool_cv, done_cv;
    chunk_t *open[2]; /* being filled by the loop: predictions, feedback */
    chunk_t *qhead, *qtail;
    chunk_t *spare; /* one freed chunk kept for reuse */
    size_t mem_bytes, mem_rows;
    int db_up;   /* connections up (the gauge says 1 when any is) */
    int db_down; /* a connect or a write failed: batches go to the spool until the next connect */
    int stopping, aborting, db_running, spool_final;
    stats_t st;
    int64_t last_warn_us[NDROPS];

    pthread_mutex_t db_mu;   /* the connections, against fm_db_interrupt */
    pthread_mutex_t mark_mu; /* the crash marker */
    int64_t mark_first, mark_last;
    dbt_t *dbt;
    int ndb;

    fm_spool_t *spool;
    pthread_t spool_thread;
    int spool_started;

    /* The loop's. */
    uint64_t rng[2];
    uint8_t *sampled; /* per image of the current request */
    size_t sampled_cap;
};

void fm_pg_writer_config_default(fm_pg_writer_config_t *c) {
    memset(c, 0, sizeof *c);
    c->buffer_bytes = 64u << 20;
    c->batch_rows = 10000;
    c->flush_ms = 100;
    c->sample_rate = 0.05;
    c->log_predictions = 1.0;
    c->shutdown_timeout_ms = 30000;
    c->dead_after_ms = 10000;
    c->binary = 1;
    c->connections = 2;
}

static uint64_t rand64(pg_writer_t *w) {
    uint64_t s1 = w->rng[0];
    const uint64_t s0 = w->rng[1];
    w->rng[0] = s0;
    s1 ^= s1 << 23;
    w->rng[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return w->rng[1] + s0;
}

/* A uniform number in [0, 1). */
static double rand01(pg_writer_t *w) { return (double)(rand64(w) >> 11) * (1.0 / 9007199254740992.0); }

/* Logs at most once per 10 s per reason (a full disk must not flood the
 * log); under mu. */
static int warn_due(pg_writer_t *w, int reason) {
    int64_t now = (int64_t)fm_now_us();
    if (w->last_warn_us[reason] && now - w->last_warn_us[reason] < 10000000)
        return 0;
    w->last_warn_us[reason] = now;
    return 1;
}

/* ---- Chunks ------------------------------------------------------------- */

/* A chunk with room for chunk_bytes, or NULL when the buffer is full.
 * Under mu. */
static chunk_t *chunk_new(pg_writer_t *w, uint32_t type) {
    if (w->mem_bytes + w->chunk_bytes > w->cfg.buffer_bytes)
        return NULL;
    chunk_t *c = w->spare;
    if (c) {
        w->spare = NULL;
    } else {
        c = malloc(sizeof *c);
        if (!c)
            return NULL;
        c->data = malloc(w->chunk_bytes);
        if (!c->data) {
            free(c);
            return NULL;
        }
        c->cap = w->chunk_bytes;
    }
    c->next = NULL;
    c->type = type;
    c->len = 0;
    c->rows = c->sampled = 0;
    c->born_us = fm_now_us();
    w->mem_bytes += c->cap;
    return c;
}

/* Under mu. */
static void chunk_free(pg_writer_t *w, chunk_t *c) {
    w->mem_bytes -= c->cap;
    w->mem_rows -= c->rows;
    if (!w->spare && c->cap == w->chunk_bytes) {
        w->spare = c;
        return;
    }
    free(c->data);
    free(c);
}

/* Ends a chunk: it gets its batch id and joins the queue. Under mu. */
static void seal(pg_writer_t *w, int which) {
    chunk_t *c = w->open[which];
    if (!c)
        return;
    w->open[which] = NULL;
    fm_uuid7_new(c->id);
    if (w->qtail)
        w->qtail->next = c;
    else
        w->qhead = c;
    w->qtail = c;
    pthread_cond_signal(&w->db_cv);
    if (w->db_down || w->mem_bytes > w->cfg.buffer_bytes / 2)
        pthread_cond_signal(&w->spool_cv);
}

/* Seals open chunks that have waited flush_ms (all when `all`). Under mu. */
static void seal_due(pg_writer_t *w, int all) {
    uint64_t now = fm_now_us();
    for (int k = 0; k < 2; k++)
        if (w->open[k] && (all || now - w->open[k]->born_us >= (uint64_t)w->cfg.flush_ms * 1000))
            seal(w, k);
}

static chunk_t *pop(pg_writer_t *w) {
    chunk_t *c = w->qhead;
    if (c) {
        w->qhead = c->next;
        if (!w->qhead)
            w->qtail = NULL;
        c->next = NULL;
    }
    return c;
}

static void push_front(pg_writer_t *w, chunk_t *c) {
    c->next = w->qhead;
    w->qhead = c;
    if (!w->qtail)
        w->qtail = c;
}

static void count_drop(pg_writer_t *w, int kind, int reason, uint64_t rows) {
    w->st.dropped[kind][reason] += rows;
    w->st.last_error_wall_us = fm_wall_us();
}

/* ---- The loop's side ---------------------------------------------------- */

static int valid_prediction(const fm_prediction_t *p) {
    size_t vlen = p->model_version ? strlen(p->model_version) : 0;
    if (vlen == 0 || vlen > 127 || fm_logc_role(p->role) < 0 || fm_logc_route(p->routing) < 0)
        return 0;
    for (size_t i = 0; i < p->n; i++) {
        float c = p->confidence[i];
        if (p->labels[i] < 0 || p->labels[i] > 9 || !(c >= 0.0f && c <= 1.0f))
            return 0;
        for (int k = 0; k < 10; k++)
            if (!isfinite(p->probs[i * 10 + (size_t)k]))
                return 0;
    }
    return 1;
}

static void on_prediction(fm_sink_t *self, const fm_prediction_t *p) {
    pg_writer_t *w = (pg_writer_t *)self;
    if (p->n == 0)
        return;
    if (w->cfg.log_predictions < 1.0 && rand01(w) >= w->cfg.log_predictions) {
        pthread_mutex_lock(&w->mu);
        w->st.not_logged++;
        pthread_mutex_unlock(&w->mu);
        return;
    }
    uint8_t rid[16];
    /* image_index is a smallint: a request of more than 32768 images (a
     * configuration that allows it) loses the rest, counted. */
    size_t n = p->n > 32768 ? 32768 : p->n;
    int ok = fm_uuid_parse(p->request_id, rid) == 0 && valid_prediction(p);
    if (ok && w->sampled_cap < n) {
        uint8_t *s = realloc(w->sampled, n);
        if (s) {
            w->sampled = s;
            w->sampled_cap = n;
        } else {
            ok = 0;
        }
    }
    for (size_t i = 0; ok && i < n; i++)
        w->sampled[i] = w->cfg.sample_rate > 0 && rand01(w) < w->cfg.sample_rate;
    fm_model_role_t role = (fm_model_role_t)fm_logc_role(p->role);
    fm_route_t route = (fm_route_t)fm_logc_route(p->routing);

    pthread_mutex_lock(&w->mu);
    if (!ok) {
        count_drop(w, K_PRED, DROP_INVALID, p->n);
        if (warn_due(w, DROP_INVALID))
            fm_error("pglog", "prediction %s not logged: a field is out of range (version, role, label or "
                              "probabilities)",
                     p->request_id ? p->request_id : "?");
        pthread_mutex_unlock(&w->mu);
        return;
    }
    if (n < p->n)
        count_drop(w, K_PRED, DROP_INVALID, p->n - n);
    size_t vlen = strlen(p->model_version);
    size_t first = 0;
    while (first < n) {
        chunk_t *c = w->open[0];
        /* How many of the remaining images fit in this chunk. */
        size_t fit = 0, bytes = FM_LOGC_REQUEST_HEAD + vlen, smp = 0;
        if (c) {
            size_t room = c->cap - c->len;
            while (first + fit < n && c->rows + fit < (size_t)w->cfg.batch_rows) {
                size_t add = FM_LOGC_IMAGE_HEAD + (w->sampled[first + fit] ? FM_PIXEL_COUNT : 0);
                if (bytes + add > room)
                    break;
                bytes += add;
                smp += w->sampled[first + fit];
                fit++;
            }
        }
        if (fit == 0) {
            if (c && c->rows)
                seal(w, 0);
            else if (c) /* empty and still too small: cannot happen with chunk_bytes >= 64 KiB */
                break;
            if (!(w->open[0] = chunk_new(w, FM_LOGC_PREDICTIONS))) {
                count_drop(w, K_PRED, DROP_BUFFER_FULL, n - first);
                if (warn_due(w, DROP_BUFFER_FULL))
                    fm_warn("pglog", "memory buffer full (%zu of %zu bytes): dropping predictions until the "
                                     "database or the spool catches up (counted in fm_log_rows_dropped)",
                            w->mem_bytes, w->cfg.buffer_bytes);
                pthread_cond_signal(&w->spool_cv);
                break;
            }
            continue;
        }
        c->len += fm_logc_put_request(c->data + c->len, p, rid, role, route, first, fit, w->sampled + first);
        c->rows += (uint32_t)fit;
        c->sampled += (uint32_t)smp;
        w->mem_rows += fit;
        first += fit;
        if (c->rows >= (uint32_t)w->cfg.batch_rows)
            seal(w, 0);
    }
    pthread_mutex_unlock(&w->mu);
}

static int on_feedback(fm_sink_t *self, const fm_feedback_t *f) {
    pg_writer_t *w = (pg_writer_t *)self;
    fm_feedback_row_t row = {0};
    char source[FM_FEEDBACK_SOURCE_MAX + 1];
    if (fm_uuid_parse_n(f->request_id, 36, row.request_id) != 0)
        return fm_fail(FM_EINVAL, "request_id is not a UUID");
    if (f->image_index > 32767 || f->label < 0 || f->label > 9 || f->source_len > FM_FEEDBACK_SOURCE_MAX)
        return fm_fail(FM_EINVAL, "feedback out of range");
    row.image_index = (int)f->image_index;
    row.label = f->label;
    row.received_us = f->received_wall_us;
    if (f->source) {
        memcpy(source, f->source, f->source_len);
        source[f->source_len] = '\0';
        row.source = source;
    }
    int rc = 0;
    pthread_mutex_lock(&w->mu);
    chunk_t *c = w->open[1];
    if (c && (c->cap - c->len < FM_LOGC_FEEDBACK_HEAD + FM_FEEDBACK_SOURCE_MAX ||
              c->rows >= (uint32_t)w->cfg.batch_rows)) {
        seal(w, 1);
        c = NULL;
    }
    if (!c && !(c = w->open[1] = chunk_new(w, FM_LOGC_FEEDBACK))) {
        /* The client can send it again: tell it so rather than drop it. */
        rc = fm_fail(FM_EOVERLOADED, "the prediction log's buffer is full; retry later");
        pthread_cond_signal(&w->spool_cv);
    } else {
        c->len += fm_logc_put_feedback(c->data + c->len, &row);
        c->rows++;
        w->mem_rows++;
    }
    pthread_mutex_unlock(&w->mu);
    return rc;
}

/* ---- Metrics ------------------------------------------------------------ */

static void emitf(fm_sink_emit_fn emit, void *ctx, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void emitf(fm_sink_emit_fn emit, void *ctx, const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n > 0)
        emit(ctx, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

static void head(fm_sink_emit_fn emit, void *ctx, const char *name, const char *type, const char *help) {
    emitf(emit, ctx, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void metrics(fm_sink_t *self, fm_sink_emit_fn emit, void *ctx) {
    pg_writer_t *w = (pg_writer_t *)self;
    pthread_mutex_lock(&w->mu);
    stats_t s = w->st;
    size_t mem = w->mem_bytes, rows = w->mem_rows;
    int up = w->db_up > 0;
    s.pending_deltas = 0;
    for (int i = 0; i < w->ndb; i++)
        s.pending_deltas += w->dbt[i].pending;
    pthread_mutex_unlock(&w->mu);
    fm_spool_stats_t sp = s.spool;
    head(emit, ctx, "fm_log_rows_written", "counter", "Rows committed to PostgreSQL (live and replayed), by kind.");
    for (int k = 0; k < NKINDS; k++)
        emitf(emit, ctx, "fm_log_rows_written{kind=\"%s\"} %llu\n", kind_names[k], (unsigned long long)s.written[k]);
    head(emit, ctx, "fm_log_rows_spooled", "counter", "Rows moved to the spool on local disk, by kind.");
    for (int k = 0; k < NKINDS; k++)
        emitf(emit, ctx, "fm_log_rows_spooled{kind=\"%s\"} %llu\n", kind_names[k], (unsigned long long)s.spooled[k]);
    head(emit, ctx, "fm_log_rows_replayed", "counter", "Rows committed from the spool (part of fm_log_rows_written).");
    for (int k = 0; k < NKINDS; k++)
        emitf(emit, ctx, "fm_log_rows_replayed{kind=\"%s\"} %llu\n", kind_names[k],
              (unsigned long long)s.replayed[k]);
    head(emit, ctx, "fm_log_rows_dropped", "counter", "Rows that will never reach PostgreSQL, by kind and reason.");
    for (int k = 0; k < NKINDS; k++)
        for (int r = 0; r < NDROPS; r++)
            emitf(emit, ctx, "fm_log_rows_dropped{kind=\"%s\",reason=\"%s\"} %llu\n", kind_names[k], drop_names[r],
                  (unsigned long long)s.dropped[k][r]);
    head(emit, ctx, "fm_log_requests_not_logged", "counter", "Predict requests left out by log_predictions < 1.");
    emitf(emit, ctx, "fm_log_requests_not_logged %llu\n", (unsigned long long)s.not_logged);
    head(emit, ctx, "fm_log_batches", "counter",
         "Batches sent to PostgreSQL: committed, duplicate (committed before: skipped), failed (retried or spooled).");
    emitf(emit, ctx, "fm_log_batches{result=\"committed\"} %llu\n", (unsigned long long)s.committed);
    emitf(emit, ctx, "fm_log_batches{result=\"duplicate\"} %llu\n", (unsigned long long)s.duplicate);
    emitf(emit, ctx, "fm_log_batches{result=\"failed\"} %llu\n", (unsigned long long)s.failed);
    head(emit, ctx, "fm_log_copy_duration_seconds", "histogram",
         "Time of one committed batch's transaction (COPYs, rollup deltas, COMMIT).");
    uint64_t cum = 0;
    for (int b = 0; b < LAT_BUCKETS; b++) {
        cum += s.lat_hist[b];
        if (b < LAT_BUCKETS - 1)
            emitf(emit, ctx, "fm_log_copy_duration_seconds_bucket{le=\"%g\"} %llu\n", lat_bounds_s[b],
                  (unsigned long long)cum);
        else
            emitf(emit, ctx, "fm_log_copy_duration_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    }
    emitf(emit, ctx, "fm_log_copy_duration_seconds_sum %.6f\n", s.lat_sum_s);
    emitf(emit, ctx, "fm_log_copy_duration_seconds_count %llu\n", (unsigned long long)s.lat_count);
    head(emit, ctx, "fm_log_buffer_bytes", "gauge", "Memory held by batches not yet written or spooled.");
    emitf(emit, ctx, "fm_log_buffer_bytes %zu\n", mem);
    head(emit, ctx, "fm_log_buffer_limit_bytes", "gauge", "The memory buffer's bound (log_buffer_bytes).");
    emitf(emit, ctx, "fm_log_buffer_limit_bytes %zu\n", w->cfg.buffer_bytes);
    head(emit, ctx, "fm_log_buffer_rows", "gauge", "Rows in memory not yet written or spooled.");
    emitf(emit, ctx, "fm_log_buffer_rows %zu\n", rows);
    head(emit, ctx, "fm_log_spool_bytes", "gauge", "Bytes of spool files on disk waiting to be replayed.");
    emitf(emit, ctx, "fm_log_spool_bytes %llu\n", (unsigned long long)sp.bytes);
    head(emit, ctx, "fm_log_spool_segments", "gauge", "Spool segment files on disk.");
    emitf(emit, ctx, "fm_log_spool_segments %d\n", sp.segments);
    head(emit, ctx, "fm_log_spool_damaged_records", "counter",
         "Torn or damaged spool records skipped during replay (their rows are lost).");
    emitf(emit, ctx, "fm_log_spool_damaged_records %llu\n", (unsigned long long)sp.damaged);
    head(emit, ctx, "fm_log_database_connected", "gauge", "1 while the writer holds a working connection.");
    emitf(emit, ctx, "fm_log_database_connected %d\n", up);
    head(emit, ctx, "fm_log_connect_failures", "counter", "Failed attempts to connect to PostgreSQL.");
    emitf(emit, ctx, "fm_log_connect_failures %llu\n", (unsigned long long)s.connect_failures);
    head(emit, ctx, "fm_log_last_error_timestamp_seconds", "gauge",
         "Unix time of the last database error, spool failure or drop; 0 if none.");
    emitf(emit, ctx, "fm_log_last_error_timestamp_seconds %.3f\n", (double)s.last_error_wall_us / 1e6);
    head(emit, ctx, "fm_log_rollup_deltas_pending", "gauge",
         "Rollup deltas held in memory: open 60 s buckets and closed ones not yet applied.");
    emitf(emit, ctx, "fm_log_rollup_deltas_pending %d\n", s.pending_deltas);
}

void fm_pg_writer_get_stats(fm_sink_t *sink, fm_pg_writer_stats_t *out) {
    pg_writer_t *w = (pg_writer_t *)sink;
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&w->mu);
    for (int k = 0; k < NKINDS; k++) {
        out->written[k] = w->st.written[k];
        out->spooled[k] = w->st.spooled[k];
        out->replayed[k] = w->st.replayed[k];
        for (int r = 0; r < NDROPS; r++)
            out->dropped += w->st.dropped[k][r];
    }
    out->batches_committed = w->st.committed;
    out->batches_duplicate = w->st.duplicate;
    out->batches_failed = w->st.failed;
    out->buffer_bytes = w->mem_bytes;
    out->buffer_rows = w->mem_rows;
    out->connected = w->db_up > 0;
    out->spool_bytes = w->st.spool.bytes;
    pthread_mutex_unlock(&w->mu);
}

/* ---- Spooling ----------------------------------------------------------- */

/* Copies the spool's counters for /metrics, which must not wait on the
 * spool's lock (held across disk writes). Without mu. */
static void refresh_spool_stats(pg_writer_t *w) {
    if (!w->spool)
        return;
    fm_spool_stats_t sp;
    fm_spool_get_stats(w->spool, &sp);
    pthread_mutex_lock(&w->mu);
    w->st.spool = sp;
    pthread_mutex_unlock(&w->mu);
}

/* Writes a batch to the spool, or counts its rows as dropped. Any thread,
 * without mu. Returns 0 when it is on disk. */
static int spool_chunk(pg_writer_t *w, const chunk_t *c) {
    int kind = c->type == FM_LOGC_FEEDBACK ? K_FEEDBACK : K_PRED;
    int rc = w->spool ? fm_spool_append(w->spool, c->type, c->id, c->data, c->len)
                      : fm_fail(FM_EUNAVAILABLE, "no spool directory is configured (FM_SPOOL_DIR)");
    pthread_mutex_lock(&w->mu);
    if (rc == 0) {
        w->st.spooled[kind] += c->rows;
        if (kind == K_PRED)
            w->st.spooled[K_SAMPLED] += c->sampled;
    } else {
        int reason = !w->spool ? DROP_NO_SPOOL : rc == FM_EOVERLOADED ? DROP_SPOOL_FULL : DROP_SPOOL_ERROR;
        count_drop(w, kind, reason, c->rows);
        if (kind == K_PRED)
            count_drop(w, K_SAMPLED, reason, c->sampled);
        if (warn_due(w, reason))
            fm_error("pglog", "a batch of %u %s rows could not be spooled and is dropped: %s (counted in "
                              "fm_log_rows_dropped{reason=\"%s\"})",
                     c->rows, kind_names[kind], fm_last_error(), drop_names[reason]);
    }
    pthread_mutex_unlock(&w->mu);
    refresh_spool_stats(w);
    return rc;
}

/* Spools a rollup delta that could not be applied before shutdown. */
static int spool_delta(void *ctx, const uint8_t id[16], int64_t bucket, const char *version,
                       const fm_pixel_hist_t *h, const fm_pred_hist_t *ph) {
    pg_writer_t *w = ctx;
    if (!w->spool)
        return fm_fail(FM_EUNAVAILABLE, "no spool directory");
    size_t len;
    uint8_t *buf = fm_logc_encode_delta(bucket, version, h, ph, &len);
    if (!buf)
        return FM_ENOMEM;
    int rc = fm_spool_append(w->spool, FM_LOGC_DELTA, id, buf, len);
    free(buf);
    return rc;
}

/* The spool thread: moves queued batches to disk while the database is
 * away or too slow for the buffer (above half of it, down to a quarter),
 * and everything at the end of a shutdown; syncs the spool every second. */
static void *spool_main(void *arg) {
    pg_writer_t *w = arg;
    uint64_t last_sync = fm_now_us();
    pthread_mutex_lock(&w->mu);
    for (;;) {
        int draining = 0;
        if (w->spool_final) {
            seal_due(w, 1);
            draining = w->qhead != NULL;
            if (!draining)
                break;
        } else if (w->qhead && (w->db_down || w->mem_bytes > w->cfg.buffer_bytes / 2)) {
            draining = 1;
        } else if (w->db_down) {
            seal_due(w, 0); /* nothing goes to the database: spool what waited flush_ms */
            draining = w->qhead != NULL;
        }
        if (draining) {
            /* Oldest first; while the database is up, only down to a
             * quarter of the buffer, so it keeps most of the work. */
            while (w->qhead && (w->spool_final || w->db_down || w->mem_bytes > w->cfg.buffer_bytes / 4)) {
                chunk_t *c = pop(w);
                int final = w->spool_final;
                pthread_mutex_unlock(&w->mu);
                if (!w->spool && !final) {
                    /* Nowhere to put it: it waits in memory for the database. */
                    pthread_mutex_lock(&w->mu);
                    push_front(w, c);
                    break;
                }
                spool_chunk(w, c);
                pthread_mutex_lock(&w->mu);
                chunk_free(w, c);
            }
            if (!w->spool && !w->spool_final) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_nsec += 100 * 1000000L;
                if (ts.tv_nsec >= 1000000000L) {
                    ts.tv_sec++;
                    ts.tv_nsec -= 1000000000L;
                }
                pthread_cond_timedwait(&w->spool_cv, &w->mu, &ts);
            }
            continue;
        }
        uint64_t now = fm_now_us();
        if (w->spool && now - last_sync >= 1000000) {
            pthread_mutex_unlock(&w->mu);
            fm_spool_sync(w->spool);
            refresh_spool_stats(w);
            pthread_mutex_lock(&w->mu);
            last_sync = now;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long wait_ms = !w->db_down ? 1000 : (w->cfg.flush_ms > 0 ? w->cfg.flush_ms : 10);
        ts.tv_sec += wait_ms / 1000;
        ts.tv_nsec += (wait_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&w->spool_cv, &w->mu, &ts);
    }
    pthread_mutex_unlock(&w->mu);
    if (w->spool)
        fm_spool_sync(w->spool);
    return NULL;
}

/* ---- The database thread ------------------------------------------------- */

/* A failure that retrying cannot cure: the batch's data (our own checks, or
 * PostgreSQL's data-exception and integrity classes on a healthy
 * connection). Anything else (connection lost, server shutting down,
 * missing tables before a migration) is retried later. */
static int is_poison(dbt_t *t, int rc) {
    if (rc == FM_EINVAL || rc == FM_EFORMAT)
        return 1;
    if (rc != FM_EDB || !fm_db_ok(t->db))
        return 0;
    const char *st = fm_db_sqlstate(t->db);
    return strncmp(st, "22", 2) == 0 || strncmp(st, "23", 2) == 0;
}

/* Keeps a batch PostgreSQL refuses for good next to the spool, for a
 * person to look at. */
static void reject(pg_writer_t *w, uint32_t type, const uint8_t id[16], const uint8_t *data, size_t len,
                   uint64_t rows, uint64_t sampled, const char *why) {
    char idt[FM_UUID_TEXT_LEN + 1], path[700] = "";
    fm_uuid_format(id, idt);
    if (w->spool_dir) {
        snprintf(path, sizeof path, "%s/rejected-%s.batch", w->spool_dir, idt);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(data, 1, len, f) != len)
            path[0] = '\0';
        if (f)
            fclose(f);
    }
    pthread_mutex_lock(&w->mu);
    int kind = type == FM_LOGC_FEEDBACK ? K_FEEDBACK : K_PRED;
    count_drop(w, kind, DROP_REJECTED, rows);
    if (kind == K_PRED)
        count_drop(w, K_SAMPLED, DROP_REJECTED, sampled);
    pthread_mutex_unlock(&w->mu);
    fm_error("pglog", "PostgreSQL refuses batch %s (%llu rows) for good: %s; %s%s", idt, (unsigned long long)rows,
             why, path[0] ? "kept in " : "not kept", path);
}

/* ---- Crash marker ----------------------------------------------------------
 * While rollup deltas wait in memory, <spool>/PENDING-ROLLUPS names their
 * buckets; a clean shutdown (deltas applied or spooled) removes it. A run
 * that finds it knows the previous one crashed with those counts, and says
 * how to restore them (the raw rows are complete). */

static void marker_path(const pg_writer_t *w, char *out, size_t cap) {
    snprintf(out, cap, "%s/PENDING-ROLLUPS", w->spool_dir);
}

/* Keeps the marker in step with the pending deltas of every connection
 * (their union); called by a database thread after each change. */
static void marker_update(dbt_t *t) {
    pg_writer_t *w = t->w;
    pthread_mutex_lock(&w->mu);
    t->pending = fm_store_writer_pending(t->sw);
    pthread_mutex_unlock(&w->mu);
    if (!w->spool_dir)
        return;
    pthread_mutex_lock(&w->mark_mu);
    fm_store_writer_pending_range(t->sw, &t->mark_first, &t->mark_last);
    int64_t first = 0, last = 0;
    for (int i = 0; i < w->ndb; i++) {
        const dbt_t *o = &w->dbt[i];
        if (!o->mark_first && !o->mark_last)
            continue;
        if (!first || o->mark_first < first)
            first = o->mark_first;
        if (!last || o->mark_last > last)
            last = o->mark_last;
    }
    int64_t *have_first = &w->mark_first, *have_last = &w->mark_last;
    if (first == *have_first && last == *have_last) {
        pthread_mutex_unlock(&w->mark_mu);
        return;
    }
    char path[600];
    marker_path(w, path, sizeof path);
    if (!first && !last) {
        unlink(path);
    } else {
        FILE *f = fopen(path, "w");
        if (f) {
            fprintf(f, "%lld %lld\n", (long long)first, (long long)last);
            fclose(f);
        }
    }
    *have_first = first;
    *have_last = last;
    pthread_mutex_unlock(&w->mark_mu);
}

/* At start: the previous run on this spool crashed with deltas in memory. */
static void marker_check(pg_writer_t *w) {
    if (!w->spool_dir)
        return;
    char path[600];
    marker_path(w, path, sizeof path);
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    long long first = 0, last = 0;
    int n = fscanf(f, "%lld %lld", &first, &last);
    fclose(f);
    if (n == 2) {
        char a[40], b[40];
        fm_rows_timestamp(a, sizeof a, first);
        fm_rows_timestamp(b, sizeof b, last + FM_PIXEL_BUCKET_US);
        fm_warn("pglog", "the previous fmserve on this spool stopped without applying the rollup deltas of the "
                         "buckets %s .. %s (it was killed); the raw rows are complete. Once those minutes are over, "
                         "restore the rollups with: SELECT fm_rollup_rebuild('%s', '%s');",
                a, b, a, b);
    }
    unlink(path);
}

static void note_latency(pg_writer_t *w, uint64_t t0) {
    double s = (double)(fm_now_us() - t0) / 1e6;
    int b = 0;
    while (b < LAT_BUCKETS - 1 && s > lat_bounds_s[b])
        b++;
    w->st.lat_hist[b]++;
    w->st.lat_sum_s += s;
    w->st.lat_count++;
}

/* Writes one batch (a memory chunk or a spool record). Returns 0 when it is
 * in PostgreSQL (now or before), or the failure. */
static int write_batch(dbt_t *t, uint32_t type, const uint8_t id[16], const uint8_t *data, size_t len,
                       int replay) {
    pg_writer_t *w = t->w;
    uint64_t t0 = fm_now_us();
    int dup = 0, rc;
    uint64_t rows = 0, sampled = 0;
    int kind = K_PRED;
    if (type == FM_LOGC_PREDICTIONS) {
        rc = fm_logc_decode_predictions(data, len, &t->dec);
        if (rc == 0)
            rc = fm_store_writer_write_batch(t->sw, id, t->dec.rows, t->dec.n, t->dec.images, &dup);
        rows = t->dec.n;
        sampled = t->dec.sampled;
    } else if (type == FM_LOGC_FEEDBACK) {
        kind = K_FEEDBACK;
        fm_feedback_row_t *fr = NULL;
        size_t n = 0;
        char *strings = NULL;
        rc = fm_logc_decode_feedback(data, len, &fr, &n, &strings);
        if (rc == 0)
            rc = fm_store_writer_feedback(t->sw, id, fr, n, &dup);
        rows = n;
        free(fr);
        free(strings);
    } else if (type == FM_LOGC_DELTA) {
        int64_t bucket;
        char version[128];
        fm_pixel_hist_reset(t->dh);
        memset(t->dph, 0, sizeof *t->dph);
        rc = fm_logc_decode_delta(data, len, &bucket, version, t->dh, t->dph);
        if (rc == 0)
            rc = fm_store_writer_apply_delta(t->sw, id, bucket, version, t->dh, t->dph, &dup);
        kind = -1;
    } else {
        rc = fm_fail(FM_EFORMAT, "spool record of unknown type %u", type);
    }
    pthread_mutex_lock(&w->mu);
    if (rc == 0) {
        if (dup) {
            w->st.duplicate++;
        } else {
            w->st.committed++;
            note_latency(w, t0);
            if (kind >= 0) {
                w->st.written[kind] += rows;
                if (kind == K_PRED)
                    w->st.written[K_SAMPLED] += sampled;
                if (replay) {
                    w->st.replayed[kind] += rows;
                    if (kind == K_PRED)
                        w->st.replayed[K_SAMPLED] += sampled;
                }
            }
        }
    } else {
        w->st.failed++;
        w->st.last_error_wall_us = fm_wall_us();
    }
    pthread_mutex_unlock(&w->mu);
    if (rc && is_poison(t, rc)) {
        char why[600];
        snprintf(why, sizeof why, "%s", fm_last_error());
        reject(w, type, id, data, len, rows, sampled, why);
        return 0;
    }
    return rc;
}

static void disconnect(dbt_t *t) {
    pg_writer_t *w = t->w;
    pthread_mutex_lock(&w->db_mu);
    fm_db_close(t->db);
    t->db = NULL;
    pthread_mutex_unlock(&w->db_mu);
    pthread_mutex_lock(&w->mu);
    if (t->up)
        w->db_up--;
    t->up = 0;
    w->db_down = 1;
    pthread_cond_signal(&w->spool_cv); /* what waits in memory now goes to disk */
    pthread_mutex_unlock(&w->mu);
}

static int try_connect(dbt_t *t) {
    pg_writer_t *w = t->w;
    fm_db_t *db;
    int rc = fm_db_connect_watchful(w->url, w->cfg.dead_after_ms, &db);
    if (rc == 0 && (rc = fm_db_exec(db, "SELECT 1 FROM ingested_batches LIMIT 0")) != 0) {
        char detail[600];
        snprintf(detail, sizeof detail, "%s", fm_last_error());
        fm_db_close(db);
        return fm_fail(rc, "the database lacks the prediction-log tables (run `fmctl db migrate`): %s", detail);
    }
    if (rc)
        return rc;
    pthread_mutex_lock(&w->db_mu);
    t->db = db;
    pthread_mutex_unlock(&w->db_mu);
    fm_store_writer_set_db(t->sw, db);
    return 0;
}

/* Replays one spool record. 1 when one was handled, 0 when the spool has
 * nothing sealed, or a negative code (the connection is to be dropped). */
static int replay_one(dbt_t *t) {
    pg_writer_t *w = t->w;
    fm_spool_record_t rec;
    int rc = fm_spool_next(w->spool, &rec);
    if (rc == 0 && fm_spool_has_records(w->spool)) {
        /* Only the segment being appended holds records: end it, so the
         * database gets them now rather than after the next rotation. */
        fm_spool_seal(w->spool);
        rc = fm_spool_next(w->spool, &rec);
    }
    if (rc <= 0) {
        if (rc < 0)
            fm_error("pglog", "spool: %s", fm_last_error());
        return rc < 0 ? 0 : 0;
    }
    rc = write_batch(t, rec.type, rec.id, rec.payload, rec.len, 1);
    if (rc)
        return rc;
    fm_spool_ack(w->spool, &rec);
    return 1;
}

static int64_t backoff_next(int64_t cur) {
    int64_t n = cur ? cur * 2 : 250;
    if (n > 30000)
        n = 30000;
    return n;
}

static void timed_wait(pg_writer_t *w, pthread_cond_t *cv, long ms) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(cv, &w->mu, &ts);
}

/* Logs a connection's state changes; the first connection speaks for all
 * (they share the server and fail together), the others log at debug. */
#define DBLOG(t, level, ...)                                      \
    do {                                                          \
        if ((t)->index == 0)                                      \
            fm_log(level, "pglog", __VA_ARGS__);                  \
        else                                                      \
            fm_log(FM_LOG_DEBUG, "pglog", __VA_ARGS__);           \
    } while (0)

static void *db_main(void *arg) {
    dbt_t *t = arg;
    pg_writer_t *w = t->w;
    int64_t backoff_ms = 0;
    uint64_t retry_at = 0, last_closed_check = 0;
    int down_logged = 0, unreachable_logged = 0, turn = 0;
    /* One connection replays the spool (its reader is single-threaded). */
    fm_spool_t *replays = t->index == 0 ? w->spool : NULL;
    pthread_mutex_lock(&w->mu);
    while (!w->aborting) {
        if (!t->db) {
            if (w->stopping)
                break; /* no database at shutdown: the spool takes the rest */
            uint64_t now = fm_now_us();
            if (now < retry_at) {
                timed_wait(w, &w->db_cv, (long)((retry_at - now) / 1000) + 1);
                continue;
            }
            pthread_mutex_unlock(&w->mu);
            int rc = try_connect(t);
            char why[600];
            snprintf(why, sizeof why, "%s", fm_last_error());
            pthread_mutex_lock(&w->mu);
            if (rc) {
                w->db_down = 1;
                pthread_cond_signal(&w->spool_cv);
                w->st.connect_failures++;
                w->st.last_error_wall_us = fm_wall_us();
                backoff_ms = backoff_next(backoff_ms);
                /* Jitter, so that replicas do not come back in step. */
                retry_at = fm_now_us() + (uint64_t)backoff_ms * 1000 * (75 + (uint64_t)(fm_now_ns() % 50)) / 100;
                /* Once per outage, then at every 30 s retry. */
                if (!unreachable_logged || backoff_ms == 30000)
                    DBLOG(t, FM_LOG_WARN, "PostgreSQL unreachable (%s); %s; retrying in %.1f s", why,
                          w->spool ? "predictions go to the spool meanwhile" : "predictions wait in memory",
                          (double)backoff_ms / 1000);
                unreachable_logged = 1;
                down_logged = 1;
                continue;
            }
            t->up = 1;
            w->db_up++;
            w->db_down = 0;
            backoff_ms = 0;
            DBLOG(t, FM_LOG_INFO, "connected to PostgreSQL%s%s",
                  down_logged ? (w->spool ? " again; replaying the spool" : " again") : "",
                  w->ndb > 1 && !down_logged ? " (log connections: more follow)" : "");
            down_logged = unreachable_logged = 0;
        }
        seal_due(w, w->stopping);
        /* Never call into the spool holding mu: the spool's lock may wait on
         * the disk, and the loop must never wait on mu for that long. */
        int stopping = w->stopping;
        pthread_mutex_unlock(&w->mu);
        int backlog = replays && !stopping && fm_spool_has_records(replays);
        pthread_mutex_lock(&w->mu);
        /* With one connection, live batches and a spool backlog take turns,
         * so that the backlog drains while traffic goes on; with more, the
         * first connection gives the backlog all its time and the others
         * take the live batches. */
        int replay = backlog && (w->ndb > 1 || (turn++ & 1) || !w->qhead);
        chunk_t *c = replay ? NULL : pop(w);
        if (c) {
            pthread_mutex_unlock(&w->mu);
            int rc = write_batch(t, c->type, c->id, c->data, c->len, 0);
            marker_update(t);
            if (rc) {
                down_logged = 1;
                DBLOG(t, FM_LOG_WARN, "writing a batch of %u rows failed (%s); %s", c->rows, fm_last_error(),
                      w->spool ? "spooling it" : "keeping it in memory");
                disconnect(t);
                if (w->spool) {
                    spool_chunk(w, c);
                    pthread_mutex_lock(&w->mu);
                    chunk_free(w, c);
                } else {
                    pthread_mutex_lock(&w->mu);
                    push_front(w, c);
                }
                backoff_ms = backoff_next(backoff_ms);
                retry_at = fm_now_us() + (uint64_t)backoff_ms * 1000;
                continue;
            }
            pthread_mutex_lock(&w->mu);
            chunk_free(w, c);
            continue;
        }
        if (replay) {
            pthread_mutex_unlock(&w->mu);
            int rc = replay_one(t);
            refresh_spool_stats(w);
            marker_update(t);
            if (rc < 0) {
                down_logged = 1;
                DBLOG(t, FM_LOG_WARN, "replaying the spool failed (%s); will retry", fm_last_error());
                disconnect(t);
            }
            pthread_mutex_lock(&w->mu);
            if (rc < 0) {
                backoff_ms = backoff_next(backoff_ms);
                retry_at = fm_now_us() + (uint64_t)backoff_ms * 1000;
            }
            if (rc != 0)
                continue;
        }
        if (w->stopping && !w->qhead && !w->open[0] && !w->open[1])
            break;
        /* Buckets that the clock has closed, when no new row does. */
        uint64_t now = fm_now_us();
        if (now - last_closed_check >= 5000000) {
            last_closed_check = now;
            pthread_mutex_unlock(&w->mu);
            int rc = fm_store_writer_flush_closed(t->sw, fm_wall_us());
            marker_update(t);
            if (rc) {
                down_logged = 1;
                DBLOG(t, FM_LOG_WARN, "applying closed rollup buckets failed (%s); will retry", fm_last_error());
                disconnect(t);
            }
            pthread_mutex_lock(&w->mu);
            continue;
        }
        timed_wait(w, &w->db_cv, w->cfg.flush_ms > 0 ? w->cfg.flush_ms : 10);
    }
    pthread_mutex_unlock(&w->mu);
    /* Shutdown: apply the open buckets, or spool them. A connection that
     * was between retries (the others may have found the database back)
     * tries once more first. */
    int rc = -1;
    if (!t->db && !w->aborting && fm_store_writer_pending(t->sw) && try_connect(t) != 0)
        DBLOG(t, FM_LOG_INFO, "no connection at shutdown (%s)", fm_last_error());
    if (t->db && !w->aborting && (rc = fm_store_writer_flush(t->sw)) != 0)
        fm_warn("pglog", "applying the open rollup buckets at shutdown failed: %s", fm_last_error());
    if (rc != 0 && fm_store_writer_pending(t->sw)) {
        if (fm_store_writer_take_deltas(t->sw, spool_delta, w) != 0)
            fm_error("pglog", "%d rollup deltas could not be spooled (%s); after the restart run "
                              "fm_rollup_rebuild() over the last minutes",
                     fm_store_writer_pending(t->sw), fm_last_error());
        else
            fm_info("pglog", "rollup deltas of the open buckets spooled for the next run");
    }
    marker_update(t);
    disconnect(t);
    pthread_mutex_lock(&w->mu);
    w->db_running--;
    pthread_cond_broadcast(&w->done_cv);
    pthread_cond_signal(&w->spool_cv);
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* ---- Life ---------------------------------------------------------------- */

static void writer_free(pg_writer_t *w) {
    while (w->qhead) {
        chunk_t *c = pop(w);
        chunk_free(w, c);
    }
    for (int k = 0; k < 2; k++)
        if (w->open[k])
            chunk_free(w, w->open[k]);
    if (w->spare) {
        free(w->spare->data);
        free(w->spare);
    }
    for (int i = 0; w->dbt && i < w->ndb; i++) {
        dbt_t *t = &w->dbt[i];
        fm_store_writer_free(t->sw);
        fm_db_close(t->db);
        fm_logc_rows_free(&t->dec);
        fm_pixel_hist_free(t->dh);
        free(t->dph);
    }
    free(w->dbt);
    fm_spool_close(w->spool);
    free(w->sampled);
    free(w->url);
    free(w->spool_dir);
    pthread_mutex_destroy(&w->mu);
    pthread_mutex_destroy(&w->db_mu);
    pthread_mutex_destroy(&w->mark_mu);
    pthread_cond_destroy(&w->db_cv);
    pthread_cond_destroy(&w->spool_cv);
    pthread_cond_destroy(&w->done_cv);
    free(w);
}

/* Stops the threads that were started (after a failed start, or at close
 * once the database threads have had their time). */
static void join_all(pg_writer_t *w) {
    for (int i = 0; i < w->ndb; i++)
        if (w->dbt[i].started)
            pthread_join(w->dbt[i].thread, NULL);
    pthread_mutex_lock(&w->mu);
    w->spool_final = 1;
    pthread_cond_broadcast(&w->spool_cv);
    pthread_mutex_unlock(&w->mu);
    if (w->spool_started)
        pthread_join(w->spool_thread, NULL);
}

static void on_close(fm_sink_t *self) {
    pg_writer_t *w = (pg_writer_t *)self;
    uint64_t t0 = fm_now_us();
    pthread_mutex_lock(&w->mu);
    w->stopping = 1;
    seal_due(w, 1);
    pthread_cond_broadcast(&w->db_cv);
    pthread_cond_broadcast(&w->spool_cv);
    fm_info("pglog", "shutting down: writing %zu buffered rows (up to %d ms), then spooling what is left",
            w->mem_rows, w->cfg.shutdown_timeout_ms);
    while (w->db_running) {
        uint64_t spent = fm_now_us() - t0;
        if (spent >= (uint64_t)w->cfg.shutdown_timeout_ms * 1000)
            break;
        timed_wait(w, &w->done_cv, (long)(((uint64_t)w->cfg.shutdown_timeout_ms * 1000 - spent) / 1000) + 1);
    }
    if (w->db_running) {
        w->aborting = 1;
        pthread_cond_broadcast(&w->db_cv);
        pthread_mutex_unlock(&w->mu);
        fm_warn("pglog", "the database did not take the last rows within %d ms; spooling them",
                w->cfg.shutdown_timeout_ms);
        /* A call blocked on a dead server fails at once; the thread spools
         * its batch and deltas. */
        pthread_mutex_lock(&w->db_mu);
        for (int i = 0; i < w->ndb; i++)
            fm_db_interrupt(w->dbt[i].db);
        pthread_mutex_unlock(&w->db_mu);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    join_all(w);
    fm_pg_writer_stats_t s;
    fm_pg_writer_get_stats(self, &s);
    fm_info("pglog", "stopped: %llu predictions, %llu sampled inputs, %llu feedback rows written; %llu rows "
                     "spooled (%.1f MB in the spool for the next run); %llu dropped",
            (unsigned long long)s.written[0], (unsigned long long)s.written[1], (unsigned long long)s.written[2],
            (unsigned long long)(s.spooled[0] + s.spooled[2]), (double)s.spool_bytes / 1e6,
            (unsigned long long)s.dropped);
    writer_free(w);
}

int fm_pg_writer_new(const fm_pg_writer_config_t *cfg, fm_sink_t **out) {
    *out = NULL;
    if (!cfg->database_url || !*cfg->database_url)
        return fm_fail(FM_EINVAL, "prediction log: no database URL");
    if (cfg->buffer_bytes < (1u << 20))
        return fm_fail(FM_EINVAL, "prediction log: a buffer of %zu bytes is below the 1 MiB minimum",
                       cfg->buffer_bytes);
    if (cfg->batch_rows < 1 || cfg->flush_ms < 0 || !(cfg->sample_rate >= 0 && cfg->sample_rate <= 1) ||
        !(cfg->log_predictions >= 0 && cfg->log_predictions <= 1) || cfg->shutdown_timeout_ms < 0 ||
        cfg->connections < 1 || cfg->connections > 64)
        return fm_fail(FM_EINVAL, "prediction log: batch_rows >= 1, flush_ms >= 0, rates in 0..1, 1..64 "
                                  "connections expected");
    pg_writer_t *w = calloc(1, sizeof *w);
    if (!w)
        return fm_fail(FM_ENOMEM, "prediction log: out of memory");
    w->cfg = *cfg;
    pthread_mutex_init(&w->mu, NULL);
    pthread_mutex_init(&w->db_mu, NULL);
    pthread_mutex_init(&w->mark_mu, NULL);
    pthread_cond_init(&w->db_cv, NULL);
    pthread_cond_init(&w->spool_cv, NULL);
    pthread_cond_init(&w->done_cv, NULL);
    w->sink.name = "postgresql";
    w->sink.on_prediction = on_prediction;
    w->sink.close = on_close;
    w->sink.on_feedback = on_feedback;
    w->sink.metrics = metrics;
    /* A chunk is a batch: sized so that the buffer holds 32 of them, and a
     * full batch_rows batch with its sampled pixels usually fits one. */
    size_t cb = cfg->buffer_bytes / 32;
    w->chunk_bytes = cb < (64u << 10) ? (64u << 10) : cb > (8u << 20) ? (8u << 20) : cb;
    w->url = strdup(cfg->database_url);
    w->spool_dir = cfg->spool_dir && *cfg->spool_dir ? strdup(cfg->spool_dir) : NULL;
    w->cfg.database_url = w->url;
    w->cfg.spool_dir = w->spool_dir;
    w->ndb = cfg->connections;
    w->dbt = calloc((size_t)w->ndb, sizeof *w->dbt);
    int nomem = !w->dbt;
    for (int i = 0; !nomem && i < w->ndb; i++) {
        dbt_t *t = &w->dbt[i];
        t->w = w;
        t->index = i;
        t->dh = fm_pixel_hist_new();
        t->dph = calloc(1, sizeof *t->dph);
        nomem = !t->dh || !t->dph || fm_store_writer_new(NULL, cfg->binary, &t->sw) != 0;
    }
    if (getrandom(w->rng, sizeof w->rng, 0) != (ssize_t)sizeof w->rng || (!w->rng[0] && !w->rng[1])) {
        w->rng[0] = fm_now_ns() | 1;
        w->rng[1] = (uint64_t)fm_wall_us();
    }
    int rc = 0;
    if (!w->url || (cfg->spool_dir && *cfg->spool_dir && !w->spool_dir) || nomem)
        rc = fm_fail(FM_ENOMEM, "prediction log: out of memory");
    if (rc == 0 && w->spool_dir)
        rc = fm_spool_open(w->spool_dir, cfg->spool_max_bytes, &w->spool);
    if (rc == 0)
        marker_check(w);
    if (rc == 0 && fm_thread_start(&w->spool_thread, spool_main, w) != 0)
        rc = fm_fail(FM_EINTERNAL, "prediction log: cannot start the spool thread");
    w->spool_started = rc == 0;
    for (int i = 0; rc == 0 && i < w->ndb; i++) {
        dbt_t *t = &w->dbt[i];
        pthread_mutex_lock(&w->mu);
        w->db_running++;
        pthread_mutex_unlock(&w->mu);
        if (fm_thread_start(&t->thread, db_main, t) != 0) {
            pthread_mutex_lock(&w->mu);
            w->db_running--;
            pthread_mutex_unlock(&w->mu);
            rc = fm_fail(FM_EINTERNAL, "prediction log: cannot start a database thread");
        }
        t->started = rc == 0;
    }
    if (rc == 0)
        refresh_spool_stats(w);
    if (rc) {
        pthread_mutex_lock(&w->mu);
        w->stopping = w->aborting = 1;
        pthread_cond_broadcast(&w->db_cv);
        pthread_mutex_unlock(&w->mu);
        join_all(w);
        writer_free(w);
        return rc;
    }
    fm_info("pglog", "prediction log on: %d connection(s), batches of up to %d rows every %d ms, %.1f%% of images "
                     "sampled, %.0f%% of requests logged, %zu MiB buffer, spool %s",
            cfg->connections, cfg->batch_rows, cfg->flush_ms, cfg->sample_rate * 100, cfg->log_predictions * 100,
            cfg->buffer_bytes >> 20, w->spool_dir ? w->spool_dir : "off (rows wait in memory while the database is away)");
    *out = &w->sink;
    return 0;
}
