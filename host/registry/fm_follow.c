/* fm_follow.c: the registry follower (fm_follow.h): the helper thread that
 * owns the LISTEN connection, the mailbox to the loop, and the loop-side
 * reconciliation of assigned and served versions. */
#include "fm_thread.h"
#include "fm_follow.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "fm_artifact.h"
#include "fm_db.h"
#include "fm_error.h"
#include "fm_log.h"
#include "fm_registry.h"
#include "fm_time.h"

#define LOG "registry"

/* What the registry assigns to one role, ready for the loader. */
typedef struct target {
    int present;
    char version[64], sha256[65];
    char uri[1024];
    char dir[1024];   /* local directory ("" when it could not be resolved) */
    char error[512];  /* why it could not be resolved */
} target_t;

struct fm_follow {
    fm_server_t *srv;
    char url[1024], cache[512], tracking[512];
    fm_follow_config_t cfg;
    pthread_t thread;
    int thread_started;
    uv_async_t async;

    /* Mailbox, guarded by mu: written by the thread, read on the loop. */
    pthread_mutex_t mu;
    int stop;
    int have_new;
    uint64_t box_gen;
    target_t box[FM_NROLES];
    int connected;
    char conn_error[256];
    uint64_t notifications, syncs, reconnects;
    int64_t last_sync_us;

    /* Loop side. */
    int have_want;
    uint64_t want_gen;
    target_t want[FM_NROLES];
    int busy[FM_NROLES];
    uint64_t failed_gen[FM_NROLES]; /* generation whose target was refused (0 = none) */
    uint64_t attempt_gen[FM_NROLES]; /* generation of the load running or last run */
    uint64_t warned_gen;            /* generation for which "no stable version" was logged */
    fm_registry_status_t st;
};

void fm_follow_config_default(fm_follow_config_t *c) {
    memset(c, 0, sizeof *c);
    c->poll_ms = 200;
    c->resync_ms = 30000;
    c->backoff_min_ms = 200;
    c->backoff_max_ms = 30000;
}

/* ---- resolving targets (any thread) ------------------------------------- */

static void resolve_target(const fm_reg_version_t *v, const char *cache, const char *tracking, target_t *t) {
    memset(t, 0, sizeof *t);
    t->present = 1;
    snprintf(t->version, sizeof t->version, "%s", v->version);
    snprintf(t->sha256, sizeof t->sha256, "%s", v->sha256);
    snprintf(t->uri, sizeof t->uri, "%s", v->artifact_uri);
    if (fm_artifact_fetch(v->artifact_uri, v->sha256, cache, tracking, 30000, t->dir, sizeof t->dir) != 0) {
        snprintf(t->error, sizeof t->error, "%s", fm_last_error());
        t->dir[0] = '\0';
    }
}

/* Reads the roles and resolves both targets. */
static int read_targets(fm_db_t *db, const char *cache, const char *tracking, target_t out[FM_NROLES]) {
    fm_reg_version_t s, c;
    int has_s, has_c;
    int rc = fm_registry_roles(db, &s, &has_s, &c, &has_c);
    if (rc)
        return rc;
    memset(out, 0, sizeof(target_t) * FM_NROLES);
    if (has_s)
        resolve_target(&s, cache, tracking, &out[FM_ROLE_STABLE]);
    if (has_c)
        resolve_target(&c, cache, tracking, &out[FM_ROLE_CANARY]);
    return 0;
}

int fm_follow_resolve(const fm_follow_config_t *c, char *stable_dir, size_t scap, char *canary_dir, size_t ccap) {
    stable_dir[0] = canary_dir[0] = '\0';
    fm_db_t *db;
    int rc = fm_db_connect(c->database_url, &db);
    if (rc)
        return rc;
    rc = fm_registry_check_schema(db);
    target_t t[FM_NROLES];
    if (rc == 0)
        rc = read_targets(db, c->cache_dir, c->tracking_uri, t);
    fm_db_close(db);
    if (rc)
        return rc;
    if (!t[FM_ROLE_STABLE].present)
        return fm_fail(FM_ENOTFOUND, "the model registry has no stable version: register one with "
                                     "`fmctl models register DIR --role stable`");
    if (t[FM_ROLE_STABLE].error[0])
        return fm_fail(FM_EIO, "registry stable version %s (%s): %s", t[FM_ROLE_STABLE].version,
                       t[FM_ROLE_STABLE].uri, t[FM_ROLE_STABLE].error);
    /* The server loads the directory without knowing the registry: check
     * here that it holds what the registry recorded. */
    fm_reg_version_t v;
    memset(&v, 0, sizeof v);
    snprintf(v.version, sizeof v.version, "%s", t[FM_ROLE_STABLE].version);
    snprintf(v.sha256, sizeof v.sha256, "%s", t[FM_ROLE_STABLE].sha256);
    snprintf(v.artifact_uri, sizeof v.artifact_uri, "%s", t[FM_ROLE_STABLE].dir);
    if ((rc = fm_registry_verify_local(&v)) != 0)
        return rc;
    snprintf(stable_dir, scap, "%s", t[FM_ROLE_STABLE].dir);
    fm_info(LOG, "stable version %s from %s", t[FM_ROLE_STABLE].version, t[FM_ROLE_STABLE].uri);
    if (t[FM_ROLE_CANARY].present) {
        target_t *ca = &t[FM_ROLE_CANARY];
        memset(&v, 0, sizeof v);
        snprintf(v.version, sizeof v.version, "%s", ca->version);
        snprintf(v.sha256, sizeof v.sha256, "%s", ca->sha256);
        snprintf(v.artifact_uri, sizeof v.artifact_uri, "%s", ca->dir);
        if (!ca->error[0] && fm_registry_verify_local(&v) != 0)
            snprintf(ca->error, sizeof ca->error, "%s", fm_last_error());
        if (ca->error[0]) {
            fm_error(LOG, "canary version %s (%s) is refused, starting without a canary: %s", ca->version, ca->uri,
                     ca->error);
        } else {
            snprintf(canary_dir, ccap, "%s", ca->dir);
            fm_info(LOG, "canary version %s from %s", ca->version, ca->uri);
        }
    }
    return 0;
}

/* ---- the helper thread ------------------------------------------------- */

static int stopping(fm_follow_t *f) {
    pthread_mutex_lock(&f->mu);
    int s = f->stop;
    pthread_mutex_unlock(&f->mu);
    return s;
}

/* Wakes the loop; with mu held, so the stop hook cannot close the handle
 * between the check and the send. */
static void wake_locked(fm_follow_t *f) {
    if (!f->stop)
        uv_async_send(&f->async);
}

static void post_status(fm_follow_t *f, int connected, const char *error) {
    pthread_mutex_lock(&f->mu);
    f->connected = connected;
    if (error)
        snprintf(f->conn_error, sizeof f->conn_error, "%s", error);
    wake_locked(f);
    pthread_mutex_unlock(&f->mu);
}

static int sync_roles(fm_follow_t *f, fm_db_t *db) {
    target_t t[FM_NROLES];
    int rc = read_targets(db, f->cache, f->tracking, t);
    if (rc)
        return rc;
    pthread_mutex_lock(&f->mu);
    int changed = memcmp(t, f->box, sizeof t) != 0;
    memcpy(f->box, t, sizeof t);
    f->have_new = 1;
    f->box_gen++;
    f->syncs++;
    f->last_sync_us = fm_wall_us();
    f->conn_error[0] = '\0';
    wake_locked(f);
    pthread_mutex_unlock(&f->mu);
    if (changed)
        fm_info(LOG, "roles: stable %s, canary %s", t[FM_ROLE_STABLE].present ? t[FM_ROLE_STABLE].version : "none",
                t[FM_ROLE_CANARY].present ? t[FM_ROLE_CANARY].version : "none");
    return 0;
}

static void sleep_ms_interruptible(fm_follow_t *f, int ms) {
    while (ms > 0 && !stopping(f)) {
        int step = ms < 50 ? ms : 50;
        usleep((useconds_t)step * 1000);
        ms -= step;
    }
}

static void *follow_thread(void *arg) {
    fm_follow_t *f = arg;
    int backoff = f->cfg.backoff_min_ms, connected_before = 0;
    while (!stopping(f)) {
        fm_db_t *db = NULL;
        int rc = fm_db_connect(f->url, &db);
        /* A query that hangs (a lock held elsewhere) must not hold the thread
         * forever; reading the roles takes milliseconds. */
        if (rc == 0)
            rc = fm_db_exec(db, "SET application_name = 'fmserve-registry'; SET statement_timeout = '15s'");
        if (rc == 0)
            rc = fm_db_listen(db, FM_REGISTRY_CHANNEL);
        if (rc == 0)
            rc = sync_roles(f, db);
        if (rc) {
            char why[256];
            snprintf(why, sizeof why, "%s", fm_last_error());
            fm_db_close(db);
            post_status(f, 0, why);
            /* Jitter keeps a fleet of replicas from reconnecting in step. */
            int wait = backoff / 2 + (int)(fm_now_ns() % (uint64_t)(backoff / 2 + 1));
            fm_warn(LOG, "registry connection failed (retrying in %d ms): %s", wait, why);
            sleep_ms_interruptible(f, wait);
            backoff = backoff * 2 > f->cfg.backoff_max_ms ? f->cfg.backoff_max_ms : backoff * 2;
            continue;
        }
        backoff = f->cfg.backoff_min_ms;
        pthread_mutex_lock(&f->mu);
        if (connected_before)
            f->reconnects++;
        pthread_mutex_unlock(&f->mu);
        fm_info(LOG, "%s: listening on channel %s", connected_before ? "reconnected" : "connected",
                FM_REGISTRY_CHANNEL);
        connected_before = 1;
        post_status(f, 1, NULL);
        uint64_t last_sync = fm_now_us();
        while (!stopping(f)) {
            char *channel, *payload;
            rc = fm_db_wait_notify(db, f->cfg.poll_ms, &channel, &payload);
            if (rc == 0) {
                uint64_t n = 1;
                fm_debug(LOG, "notification on %s: %s", channel, payload);
                free(channel);
                free(payload);
                /* Several changes in a row need one read. */
                while (fm_db_wait_notify(db, 0, &channel, &payload) == 0) {
                    free(channel);
                    free(payload);
                    n++;
                }
                pthread_mutex_lock(&f->mu);
                f->notifications += n;
                pthread_mutex_unlock(&f->mu);
                rc = sync_roles(f, db);
                last_sync = fm_now_us();
            } else if (rc == FM_EDEADLINE) {
                rc = 0;
                if (fm_now_us() - last_sync >= (uint64_t)f->cfg.resync_ms * 1000) {
                    rc = sync_roles(f, db);
                    last_sync = fm_now_us();
                }
            }
            if (rc) {
                char why[256];
                snprintf(why, sizeof why, "%s", fm_last_error());
                fm_warn(LOG, "registry connection lost: %s", why);
                post_status(f, 0, why);
                break;
            }
        }
        fm_db_close(db);
    }
    return NULL;
}

/* ---- the loop side ----------------------------------------------------- */

static int serves(fm_follow_t *f, int role, const target_t *t) {
    fm_model_info_t info;
    if (fm_server_model_info(f->srv, (fm_role_t)role, &info) != 0)
        return 0;
    return strcmp(info.version, t->version) == 0 && strcmp(info.sha256, t->sha256) == 0;
}

static void publish_status(fm_follow_t *f) {
    fm_registry_status_t *st = &f->st;
    const target_t *s = &f->want[FM_ROLE_STABLE], *c = &f->want[FM_ROLE_CANARY];
    snprintf(st->stable, sizeof st->stable, "%s", f->have_want && s->present ? s->version : "");
    snprintf(st->canary, sizeof st->canary, "%s", f->have_want && c->present ? c->version : "");
    fm_model_info_t info;
    int canary_served = fm_server_model_info(f->srv, FM_ROLE_CANARY, &info) == 0;
    st->in_sync = f->have_want && s->present && serves(f, FM_ROLE_STABLE, s) &&
                  (c->present ? serves(f, FM_ROLE_CANARY, c) : !canary_served);
    fm_server_set_registry_status(f->srv, st);
}

static void refused(fm_follow_t *f, int role, const target_t *t, const char *why) {
    fm_model_info_t info;
    char serving[80] = "nothing";
    if (fm_server_model_info(f->srv, (fm_role_t)role, &info) == 0)
        snprintf(serving, sizeof serving, "%s", info.version);
    fm_error(LOG, "%s version %s (%s) refused; %s keeps serving: %s", fm_role_name((fm_role_t)role), t->version,
             t->uri, serving, why);
    snprintf(f->st.last_error, sizeof f->st.last_error, "%s %s refused: %s", fm_role_name((fm_role_t)role),
             t->version, why);
    f->st.swaps_failed++;
    f->failed_gen[role] = f->want_gen;
}

static void reconcile(fm_follow_t *f);

static void on_loaded(fm_server_t *srv, fm_role_t role, int status, void *user) {
    fm_follow_t *f = user;
    (void)srv;
    f->busy[role] = 0;
    const target_t *t = &f->want[role];
    if (status != 0) {
        char why[512];
        snprintf(why, sizeof why, "%s", fm_last_error());
        refused(f, role, t, why);
    } else if (t->present && !serves(f, role, t)) {
        if (f->attempt_gen[role] == f->want_gen) {
            /* Loaded without error and still not what the registry recorded:
             * the directory is byte-identical to what already serves (the
             * server then swaps nothing) but its sidecar names another
             * version. Refused, or it would be loaded again and again. */
            fm_model_info_t info;
            fm_server_model_info(f->srv, role, &info);
            char why[400];
            snprintf(why, sizeof why, "%.200s holds the weights already serving as %.63s, not version %.63s", t->dir,
                     info.version, t->version);
            refused(f, role, t, why);
        } else {
            /* The assignment changed while this load ran; the next round loads it. */
            fm_debug(LOG, "%s load finished for an older assignment", fm_role_name(role));
        }
    } else {
        f->st.swaps_ok++;
        if (t->present)
            fm_info(LOG, "%s role now serves version %s as the registry assigns", fm_role_name(role), t->version);
    }
    reconcile(f);
}

static void reconcile(fm_follow_t *f) {
    if (!f->have_want)
        return;
    for (int r = 0; r < FM_NROLES; r++) {
        if (f->busy[r])
            continue;
        const target_t *t = &f->want[r];
        fm_model_info_t info;
        int have = fm_server_model_info(f->srv, (fm_role_t)r, &info) == 0;
        if (!t->present) {
            if (r == FM_ROLE_CANARY && have) {
                /* A promoted canary keeps serving its traffic until the
                 * stable role has switched to it: no request is routed to a
                 * role that is momentarily empty. */
                const target_t *st = &f->want[FM_ROLE_STABLE];
                if (f->busy[FM_ROLE_STABLE] ||
                    (st->present && !serves(f, FM_ROLE_STABLE, st) && f->failed_gen[FM_ROLE_STABLE] != f->want_gen &&
                     st->dir[0]))
                    continue;
                fm_info(LOG, "the registry has no canary any more: removing %s", info.version);
                if (fm_server_load_model(f->srv, FM_ROLE_CANARY, "", NULL, NULL) == 0)
                    f->st.swaps_ok++;
            } else if (r == FM_ROLE_STABLE && f->warned_gen != f->want_gen) {
                f->warned_gen = f->want_gen;
                fm_warn(LOG, "the registry has no stable version; %s keeps serving", have ? info.version : "nothing");
                snprintf(f->st.last_error, sizeof f->st.last_error, "the registry has no stable version");
            }
            continue;
        }
        if (have && strcmp(info.version, t->version) == 0 && strcmp(info.sha256, t->sha256) == 0)
            continue;
        if (f->failed_gen[r] == f->want_gen)
            continue; /* refused already; tried again on the next change or re-read */
        if (!t->dir[0]) {
            refused(f, r, t, t->error);
            continue;
        }
        fm_info(LOG, "%s role: loading version %s from %s", fm_role_name((fm_role_t)r), t->version, t->dir);
        if (fm_server_load_model_expect(f->srv, (fm_role_t)r, t->dir, t->version, t->sha256, on_loaded, f) == 0) {
            f->busy[r] = 1;
            f->attempt_gen[r] = f->want_gen;
        }
        else
            refused(f, r, t, fm_last_error());
    }
    publish_status(f);
}

static void on_async(uv_async_t *h) {
    fm_follow_t *f = h->data;
    pthread_mutex_lock(&f->mu);
    f->st.connected = f->connected;
    f->st.notifications = f->notifications;
    f->st.syncs = f->syncs;
    f->st.reconnects = f->reconnects;
    f->st.last_sync_wall_us = f->last_sync_us;
    if (f->conn_error[0])
        snprintf(f->st.last_error, sizeof f->st.last_error, "%s", f->conn_error);
    int fresh = f->have_new;
    if (fresh) {
        memcpy(f->want, f->box, sizeof f->want);
        f->want_gen = f->box_gen;
        f->have_want = 1;
        f->have_new = 0;
    }
    pthread_mutex_unlock(&f->mu);
    reconcile(f);
    publish_status(f);
}

static void on_stop(fm_server_t *srv, void *user) {
    fm_follow_t *f = user;
    (void)srv;
    pthread_mutex_lock(&f->mu);
    f->stop = 1;
    pthread_mutex_unlock(&f->mu);
    if (!uv_is_closing((uv_handle_t *)&f->async))
        uv_close((uv_handle_t *)&f->async, NULL);
}

int fm_follow_start(fm_server_t *srv, const fm_follow_config_t *c, fm_follow_t **out) {
    *out = NULL;
    fm_follow_t *f = calloc(1, sizeof *f);
    if (!f)
        return fm_fail(FM_ENOMEM, "registry follower");
    f->srv = srv;
    f->cfg = *c;
    snprintf(f->url, sizeof f->url, "%s", c->database_url ? c->database_url : "");
    snprintf(f->cache, sizeof f->cache, "%s", c->cache_dir ? c->cache_dir : "");
    snprintf(f->tracking, sizeof f->tracking, "%s", c->tracking_uri ? c->tracking_uri : "");
    f->cfg.database_url = f->url;
    f->cfg.cache_dir = f->cache;
    f->cfg.tracking_uri = f->tracking;
    pthread_mutex_init(&f->mu, NULL);
    int rc = uv_async_init(fm_server_loop(srv), &f->async, on_async);
    if (rc) {
        pthread_mutex_destroy(&f->mu);
        free(f);
        return fm_fail(FM_EINTERNAL, "uv_async_init: %s", uv_strerror(rc));
    }
    f->async.data = f;
    *out = f; /* from here fm_follow_free cleans up (the handle closes with the loop) */
    if ((rc = fm_server_add_stop_hook(srv, on_stop, f)) != 0)
        return rc;
    publish_status(f);
    /* The thread never handles signals: the loop's signal handles do. */
    rc = fm_thread_start(&f->thread, follow_thread, f);
    if (rc)
        return fm_fail(FM_EINTERNAL, "registry follower thread: %s", strerror(rc));
    f->thread_started = 1;
    return 0;
}

void fm_follow_free(fm_follow_t *f) {
    if (!f)
        return;
    pthread_mutex_lock(&f->mu);
    f->stop = 1;
    pthread_mutex_unlock(&f->mu);
    if (f->thread_started)
        pthread_join(f->thread, NULL);
    pthread_mutex_destroy(&f->mu);
    free(f);
}
