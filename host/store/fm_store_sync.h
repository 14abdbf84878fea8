/* fm_store_sync.h: the prediction-log writer's protocol over one synchronous
 * connection: each batch of predictions and the sampled images among them
 * go in by COPY (binary or text, fm_rows.h) in one transaction, the rollup
 * deltas (pixel counts of the sampled images, counts of the predictions)
 * are kept in memory per 60 s bucket and applied once a bucket has closed,
 * and every unit of work can carry an id that makes it exactly-once. The
 * server's asynchronous writer (fm_pg_writer.h) runs this on its own thread;
 * tests and benchmarks call it directly.
 *
 * Why once per bucket: fm_pixel_delta_apply() rewrites the bucket's 784
 * rollup rows (~0.3 s on a small machine), so applying it per batch would
 * cost more than the COPYs. A bucket closes when the writer sees a row
 * FM_STORE_CLOSE_AFTER_US past the bucket's end, or on flush. Until then its
 * counts are only in memory: a crash loses at most the open buckets' deltas
 * (the raw rows are committed), and fm_rollup_rebuild() in SQL restores them
 * from the raw rows. Drift checks only read whole, closed buckets anyway.
 *
 * Exactly once (docs/database.md, "Exactly once"): a batch written with an
 * id inserts the id into ingested_batches in its own transaction; an id that
 * is already there means an earlier attempt committed, and the batch is
 * skipped (reported as a duplicate). Rollup deltas are frozen, each with an
 * id of its own, before the transaction that applies them, and keep that id
 * until a commit is confirmed, so a retry after an unknown outcome never
 * applies one twice. A batch's counts reach the rollups either in its own
 * transaction (the buckets that its own newest row closes: a pure function
 * of the batch, so a duplicate knows what was applied) or, once its commit
 * is confirmed or found as a duplicate, through the open buckets.
 *
 * Ownership: the writer borrows the connection; free does not flush. */
#ifndef FM_STORE_SYNC_H
#define FM_STORE_SYNC_H

#include <stddef.h>
#include <stdint.h>

#include "fm_db.h"
#include "fm_pixel_stats.h"
#include "fm_rows.h"

/* A bucket is applied once a row this far past its end has been written. */
#define FM_STORE_CLOSE_AFTER_US (5LL * 1000000LL)
/* Open (bucket, version) pairs a writer may hold: at 840 KB each. */
#define FM_STORE_MAX_OPEN 32

typedef struct fm_store_writer fm_store_writer_t;

/* binary: non-zero to COPY in PostgreSQL's binary format (faster), zero
 * for the text format. */
int fm_store_writer_new(fm_db_t *db, int binary, fm_store_writer_t **out);
void fm_store_writer_free(fm_store_writer_t *w);
/* Points the writer at another connection (after a reconnect); the
 * in-memory deltas are kept. */
void fm_store_writer_set_db(fm_store_writer_t *w, fm_db_t *db);

/* Writes n predictions; images[i] is the 784-byte input of preds[i] when it
 * was sampled, NULL otherwise (images may be NULL: none sampled). In one
 * transaction: COPY predictions, COPY sampled_inputs with their summary
 * features, and apply the deltas of the buckets that have closed. On
 * failure nothing of the batch is kept, in the database or in memory. */
int fm_store_writer_write(fm_store_writer_t *w, const fm_prediction_row_t *preds, size_t n,
                          const uint8_t *const *images);

/* The same, exactly once: `id` (16 bytes) goes into ingested_batches in the
 * batch's transaction. When it is already there, nothing is written, 0 is
 * returned with *duplicate = 1, and the batch's counts join the open
 * buckets as they would have after its own commit. */
int fm_store_writer_write_batch(fm_store_writer_t *w, const uint8_t id[FM_UUID_BYTES],
                                const fm_prediction_row_t *preds, size_t n, const uint8_t *const *images,
                                int *duplicate);

/* Applies every pending delta (end of a backfill, shutdown). */
int fm_store_writer_flush(fm_store_writer_t *w);
/* Applies the deltas of the buckets closed by the wall clock `now_us` (µs
 * since the Unix epoch): when traffic stops, no new row closes them. */
int fm_store_writer_flush_closed(fm_store_writer_t *w, int64_t now_us);

/* Deltas waiting: open buckets plus frozen ones not yet applied. */
int fm_store_writer_pending(const fm_store_writer_t *w);
/* The first and last bucket start among them (µs since the Unix epoch);
 * returns 0 with both 0 when nothing is pending. */
int fm_store_writer_pending_range(const fm_store_writer_t *w, int64_t *first_us, int64_t *last_us);

/* Hands every pending delta to `take` (for the spool, when the database is
 * away at shutdown), frozen first with its id, the open ones after freezing
 * them with fresh ids; each one `take` accepts (returns 0) is forgotten. */
typedef int (*fm_store_delta_fn)(void *ctx, const uint8_t id[FM_UUID_BYTES], int64_t bucket_start_us,
                                 const char *model_version, const fm_pixel_hist_t *hist,
                                 const fm_pred_hist_t *pred);
int fm_store_writer_take_deltas(fm_store_writer_t *w, fm_store_delta_fn take, void *ctx);

/* Applies one delta exactly once under `id` (a delta read back from the
 * spool), in a transaction of its own; *duplicate = 1 when it was applied
 * before. hist or pred may be NULL. */
int fm_store_writer_apply_delta(fm_store_writer_t *w, const uint8_t id[FM_UUID_BYTES], int64_t bucket_start_us,
                                const char *model_version, const fm_pixel_hist_t *hist, const fm_pred_hist_t *pred,
                                int *duplicate);

/* Writes n feedback rows exactly once under `id` (fm_feedback_ingest: the
 * latest label of an image wins by received time); *duplicate as above. */
int fm_store_writer_feedback(fm_store_writer_t *w, const uint8_t id[FM_UUID_BYTES], const fm_feedback_row_t *rows,
                             size_t n, int *duplicate);

/* Applies every delta of the set with fm_prediction_delta_apply() and
 * fm_pixel_delta_apply() (inside the caller's transaction, if any). Does
 * not clear the set. */
int fm_store_apply_deltas(fm_db_t *db, const fm_rollup_deltas_t *deltas);

#endif /* FM_STORE_SYNC_H */
