/* fm_pg_writer.h: the server's prediction log: a prediction sink
 * (fm_sink.h) that sends every logged prediction, the pixels of a sample of
 * the images, the rollup deltas and the feedback of the feedback RPC to
 * PostgreSQL, without the request path ever waiting for the database and
 * without losing or duplicating a row (docs/database.md, "The server's
 * writer"; docs/architecture.md, "The prediction log").
 *
 * Threads: on_prediction and on_feedback run on the event loop and only
 * copy the rows into a bounded memory buffer (one mutex, no I/O). Database
 * threads (one per connection, `connections` of them, so that PostgreSQL
 * can parse COPYs on several cores) take whole batches from it and write
 * them with
 * fm_store_sync's protocol (COPY in one transaction per batch, an id per
 * batch in ingested_batches for exactly-once) over a blocking connection;
 * each reconnects with backoff; the first replays the spool when
 * PostgreSQL is back.
 * A spool thread moves batches from memory to the spool on local disk when
 * the database is down, or too slow for the buffer's high-water mark
 * (half of it). Only when the buffer is full, or the spool is full or
 * failing, are rows dropped: counted by reason in /metrics and logged.
 *
 * Ownership: fm_pg_writer_new returns a sink that owns everything; the
 * server calls its close() at shutdown, which flushes (within
 * shutdown_timeout_ms) or spools what is left and frees the writer. */
#ifndef FM_PG_WRITER_H
#define FM_PG_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "fm_sink.h"

typedef struct fm_pg_writer_config {
    const char *database_url;  /* libpq URI or keyword string; required */
    const char *spool_dir;     /* NULL or "": no spool (batches wait in memory while the database is away) */
    uint64_t spool_max_bytes;  /* bound on the spool's files; 0: the disk's free space */
    size_t buffer_bytes;       /* memory for rows not yet written or spooled */
    int batch_rows;            /* most predictions per transaction */
    int flush_ms;              /* longest a row waits in memory before its batch is sent */
    double sample_rate;        /* share of images whose pixels are kept (sampled_inputs) */
    double log_predictions;    /* share of predict requests logged at all */
    int shutdown_timeout_ms;   /* close(): time to write what is left before spooling it */
    int dead_after_ms;         /* a connection silent this long is given up (connect, keepalives) */
    int binary;                /* COPY in binary format (default) or text */
    int connections;           /* database connections (threads) batches are spread over */
} fm_pg_writer_config_t;

/* Defaults: no spool, 64 MiB buffer, 10,000 rows per batch, 100 ms flush,
 * sample 5 % of images, log every request, 30 s shutdown, 10 s dead-peer
 * timeout, binary COPY, 2 connections. */
void fm_pg_writer_config_default(fm_pg_writer_config_t *c);

/* Checks the configuration, opens the spool (which may hold batches from a
 * previous run: they are replayed first) and starts the two threads. The
 * database need not be reachable: the writer connects in the background.
 * Errors: FM_EINVAL (a setting), FM_EUNAVAILABLE (the spool directory is
 * another process's), FM_EIO. */
int fm_pg_writer_new(const fm_pg_writer_config_t *cfg, fm_sink_t **out);

/* A snapshot of the counters, for tests and logs (also on /metrics). */
typedef struct fm_pg_writer_stats {
    uint64_t written[3];  /* rows committed: predictions, sampled inputs, feedback */
    uint64_t spooled[3];  /* rows moved to the spool */
    uint64_t replayed[3]; /* rows committed from the spool */
    uint64_t dropped;     /* rows dropped, every reason */
    uint64_t batches_committed, batches_duplicate, batches_failed;
    size_t buffer_bytes, buffer_rows;
    uint64_t spool_bytes;
    int connected;
} fm_pg_writer_stats_t;
void fm_pg_writer_get_stats(fm_sink_t *sink, fm_pg_writer_stats_t *out);

#endif /* FM_PG_WRITER_H */
