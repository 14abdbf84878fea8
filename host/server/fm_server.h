/* fm_server.h: the fmserve server as a library: build it from a
 * configuration, attach prediction sinks, run it until it drains, and swap
 * model versions while it runs.
 *
 * Threading: every function here runs on the thread that calls
 * fm_server_run (the event loop), except fm_server_new/free which run before
 * and after it. */
#ifndef FM_SERVER_H
#define FM_SERVER_H

#include <stdint.h>
#include <uv.h>

#include "fm_config.h"
#include "fm_sink.h"

typedef struct fm_server fm_server_t;

/* The two serving roles. A role holds one model version at a time. */
typedef enum { FM_ROLE_STABLE = 0, FM_ROLE_CANARY = 1, FM_NROLES = 2 } fm_role_t;
const char *fm_role_name(fm_role_t role); /* "stable" / "canary" */

/* Opens the compute backend, loads and prepares the configured models (with
 * a warm-up batch) and binds both ports. Returns 0 or a negative code with a
 * detail (a model that does not load, a port in use). `cfg` is copied. */
int fm_server_new(const fm_config_t *cfg, fm_server_t **out);
/* Serves until SIGTERM/SIGINT and the drain that follows. Returns the
 * process exit code: 0 when every accepted request was answered, 1 when the
 * drain timed out or the server failed. */
int fm_server_run(fm_server_t *srv);
void fm_server_free(fm_server_t *srv);

/* Adds a sink called for every completed prediction (see fm_sink.h). The
 * sink must outlive the server or be closed by it (close() at shutdown). */
int fm_server_add_sink(fm_server_t *srv, fm_sink_t *sink);

uv_loop_t *fm_server_loop(fm_server_t *srv);
/* The bound ports (useful when the configuration asked for port 0). */
int fm_server_rpc_port(const fm_server_t *srv);
int fm_server_http_port(const fm_server_t *srv);

/* ---- Model swaps ------------------------------------------------------
 * The one way a model version changes while serving; SIGHUP uses it, and a
 * registry watcher (PostgreSQL LISTEN/NOTIFY) can use it the same way.
 * Loading, checking and preparing (with warm-up) run on a libuv worker
 * thread; the swap itself happens on the loop: new requests for the role go
 * to the new version at once, requests already queued for the old version
 * and its in-flight batches finish on it, and the old version is released
 * when its last batch completes. A load that fails leaves the role as it
 * was. */
typedef void (*fm_server_load_cb)(fm_server_t *srv, fm_role_t role, int status, void *user);

/* Loads `dir` into `role`. When the files are byte-identical to the version
 * serving the role, nothing is swapped and status is 0. `cb` (may be NULL)
 * runs on the loop when done, never from inside this call, except that an
 * empty `dir` for the canary removes the canary at once (its queued work
 * still finishes) and calls `cb` before returning. A synchronous failure
 * (FM_EUNAVAILABLE when a load for the role is already running, FM_EINVAL)
 * never calls `cb`. */
int fm_server_load_model(fm_server_t *srv, fm_role_t role, const char *dir, fm_server_load_cb cb, void *user);
/* fm_server_load_model with expectations, for a registry that recorded what
 * it assigned: the load fails, and nothing is swapped, unless the model's
 * weights have SHA-256 `sha256` (FM_ECHECKSUM) and its version id is
 * `version` (FM_EINVAL). Either may be NULL. */
int fm_server_load_model_expect(fm_server_t *srv, fm_role_t role, const char *dir, const char *version,
                                const char *sha256, fm_server_load_cb cb, void *user);

/* What serves a role now: 0 and the fields, or FM_ENOTFOUND when the role
 * is empty. Lets a registry watcher skip a swap to the version already in
 * place. */
typedef struct fm_model_info {
    char name[64], version[64], sha256[65], dir[512], arch[8];
    int64_t loaded_wall_us;
} fm_model_info_t;
int fm_server_model_info(const fm_server_t *srv, fm_role_t role, fm_model_info_t *out);

/* The share of unpinned traffic sent to the canary, 0..1 (what set_split
 * changes). */
int fm_server_set_split(fm_server_t *srv, double ratio);

/* ---- Registry follower hooks ------------------------------------------ */

/* What a registry follower reports (host/registry/fm_follow.h): the
 * versions the registry assigns, whether the server serves them, and
 * counters. The `models` RPC and /metrics show it once set. */
typedef struct fm_registry_status {
    int connected;                /* the LISTEN connection is up */
    int in_sync;                  /* the served versions are the registry's */
    char stable[64], canary[64];  /* assigned versions ("" = none) */
    char last_error[256];         /* the last refused swap or connection problem ("" = none) */
    uint64_t notifications;       /* NOTIFYs received */
    uint64_t syncs;               /* role reads (each connect, notification and periodic check) */
    uint64_t reconnects;          /* LISTEN connections re-established */
    uint64_t swaps_ok, swaps_failed;
    int64_t last_sync_wall_us;
} fm_registry_status_t;
void fm_server_set_registry_status(fm_server_t *srv, const fm_registry_status_t *st);

/* Called once on the loop when the server stops (the drain ended, or
 * fm_server_free), before it closes its handles: a follower closes its own
 * handles and stops its thread's wake-ups here. At most 4 hooks. */
typedef void (*fm_server_stop_fn)(fm_server_t *srv, void *user);
int fm_server_add_stop_hook(fm_server_t *srv, fm_server_stop_fn fn, void *user);

#endif /* FM_SERVER_H */
