/* fm_follow.h: fmserve's registry follower: the stable and canary versions
 * come from the model registry in PostgreSQL (fm_registry.h), and a role
 * change there (LISTEN fm_registry) swaps the new version in while serving.
 *
 * Threads: one helper thread owns the PostgreSQL connection (blocking
 * libpq calls never run on the event loop): it connects, LISTENs, reads the
 * roles on every connect, notification and periodic check, downloads MLflow
 * artifacts into the cache, and hands the result to the loop through a
 * mutex-guarded mailbox and uv_async_send. On the loop, the follower
 * compares what the registry assigns with what serves and asks the server
 * for swaps (fm_server_load_model_expect: load, verify, prepare and warm up
 * off the loop; swap without dropping a request). A refused version leaves
 * the serving one in place and is reported in the log, the `models` RPC
 * and /metrics. A lost connection is re-established with exponential
 * backoff, and the roles are read again at once (notifications sent while
 * it was down are lost; the re-read makes up for them). */
#ifndef FM_FOLLOW_H
#define FM_FOLLOW_H

#include <stddef.h>

#include "fm_server.h"

typedef struct fm_follow fm_follow_t;

typedef struct fm_follow_config {
    const char *database_url;
    const char *cache_dir;    /* downloads of mlflow-artifacts: versions */
    const char *tracking_uri; /* MLflow server for those downloads ("" = none) */
    int poll_ms;              /* the thread's longest wait before it checks for shutdown */
    int resync_ms;            /* roles are re-read at least this often */
    int backoff_min_ms, backoff_max_ms;
} fm_follow_config_t;

/* poll 200 ms, resync 30 s, backoff 200 ms .. 30 s. */
void fm_follow_config_default(fm_follow_config_t *c);

/* Before the server starts: the directories of the registry's stable and
 * canary versions (downloaded and verified when they are in MLflow).
 * FM_ENOTFOUND when the registry has no stable version. A canary that
 * cannot be resolved is logged and left out (canary_dir = ""), so that a
 * bad canary cannot keep every replica from starting. */
int fm_follow_resolve(const fm_follow_config_t *c, char *stable_dir, size_t scap, char *canary_dir, size_t ccap);

/* Starts following (call after fm_server_new, on the thread that will run
 * the server). The follower stops with the server (a stop hook) and is
 * freed by fm_follow_free after fm_server_free. */
int fm_follow_start(fm_server_t *srv, const fm_follow_config_t *c, fm_follow_t **out);
void fm_follow_free(fm_follow_t *f);

#endif /* FM_FOLLOW_H */
