/* fm_slots.c: model slots: loading and preparing a model version off the
 * loop, installing it as a role's active version, and releasing a version
 * when the last batch that uses it completes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_error.h"
#include "fm_log.h"
#include "fm_model.h"
#include "fm_server_int.h"
#include "fm_time.h"

void fm_slot_ref(fm_slot_t *s) { s->refs++; }

void fm_slot_destroy(fm_server_t *srv, fm_slot_t *s) {
    if (!s)
        return;
    if (s->bm)
        fm_engine_release(&srv->engine, s->bm);
    fm_model_free(s->model);
    free(s);
}

void fm_slot_unref(fm_server_t *srv, fm_slot_t *s) {
    if (--s->refs > 0)
        return;
    for (fm_slot_t **pp = &srv->slots; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    fm_info("server", "released %s model %s (%s)", fm_role_name(s->role), s->version, s->dir);
    fm_slot_destroy(srv, s);
}

static void copy_field(char *dst, size_t cap, const char *src, const char *fallback) {
    snprintf(dst, cap, "%s", src && *src ? src : fallback);
}

int fm_slot_load(fm_server_t *srv, fm_role_t role, const char *dir, fm_slot_t **out) {
    *out = NULL;
    uint64_t t0 = fm_now_us();
    fm_model_t *m = NULL;
    int rc = fm_model_load(dir, &m);
    if (rc)
        return rc;
    fm_slot_t *s = calloc(1, sizeof *s);
    if (!s) {
        fm_model_free(m);
        return fm_fail(FM_ENOMEM, "model slot");
    }
    s->role = role;
    s->model = m;
    const char *base = strrchr(dir, '/');
    base = base && base[1] ? base + 1 : dir;
    copy_field(s->name, sizeof s->name, fm_model_name(m), "model");
    copy_field(s->version, sizeof s->version, fm_model_version(m), base);
    copy_field(s->sha256, sizeof s->sha256, fm_model_weights_sha256(m), "");
    copy_field(s->dir, sizeof s->dir, dir, "");
    copy_field(s->arch, sizeof s->arch, fm_arch_name(fm_model_arch(m)), "?");
    if ((rc = fm_engine_prepare(&srv->engine, m, &s->bm)) != 0) {
        char detail[512];
        snprintf(detail, sizeof detail, "%s", fm_last_error());
        fm_slot_destroy(srv, s);
        return fm_fail(rc, "preparing model %s on the %s backend: %s", dir, srv->engine.ops->name, detail);
    }
    /* Warm-up: one largest batch, so the first client request does not pay
     * for first-touch allocations, page faults or plan building. */
    size_t n = (size_t)srv->cfg.max_batch_size;
    uint8_t *px = calloc(n, 784);
    float *probs = malloc(n * 10 * sizeof *probs), *conf = malloc(n * sizeof *conf);
    int32_t *labels = malloc(n * sizeof *labels);
    if (!px || !probs || !conf || !labels) {
        rc = fm_fail(FM_ENOMEM, "warm-up buffers");
    } else {
        for (size_t i = 0; i < n * 784; i++)
            px[i] = (uint8_t)(i * 7919u >> 3);
        fm_batch_t b = {.pixels = px, .n = n, .probs = probs, .labels = labels, .confidence = conf};
        rc = fm_engine_infer(&srv->engine, s->bm, &b);
    }
    free(px);
    free(probs);
    free(conf);
    free(labels);
    if (rc) {
        char detail[512];
        snprintf(detail, sizeof detail, "%s", fm_last_error());
        fm_slot_destroy(srv, s);
        return fm_fail(rc, "warm-up of model %s: %s", dir, detail);
    }
    s->loaded_wall_us = fm_wall_us();
    fm_info("server", "loaded %s model %s %s (%s, sha256 %.12s) from %s in %.1f ms", fm_role_name(role), s->name,
            s->version, s->arch, s->sha256, dir, (double)(fm_now_us() - t0) / 1000.0);
    *out = s;
    return 0;
}

void fm_slot_install(fm_server_t *srv, fm_role_t role, fm_slot_t *slot) {
    fm_slot_t *old = srv->active[role];
    if (slot) {
        slot->role = role;
        slot->stats = fm_metrics_model(&srv->metrics, fm_role_name(role), slot->name, slot->version);
        slot->next = srv->slots;
        srv->slots = slot;
        fm_slot_ref(slot);
    }
    srv->active[role] = slot;
    if (old || srv->batcher_ready) /* not for the first install at start-up */
        fm_info("server", "%s role: %s%s%s -> %s%s", fm_role_name(role), old ? old->name : "", old ? " " : "",
                old ? old->version : "none", slot ? slot->version : "none",
                old ? " (queued work on the old version finishes on it)" : "");
    if (old) {
        old->retired = 1;
        fm_slot_unref(srv, old);
        /* Queued work on the retired version still needs batches. */
        fm_batcher_pump(srv);
    }
}

/* ---- Asynchronous loads ------------------------------------------------ */

typedef struct load_job {
    uv_work_t work; /* first member */
    fm_server_t *srv;
    fm_role_t role;
    char dir[512];
    char current_dir[512], current_sha[65];
    char expect_version[64], expect_sha[65]; /* "" = no expectation */
    fm_server_load_cb cb;
    void *user;
    fm_slot_t *slot;
    int status, identical;
    char detail[600];
} load_job_t;

static void load_work(uv_work_t *w) {
    load_job_t *j = (load_job_t *)w;
    /* A byte-identical model in the same directory needs no new plans. */
    if (j->current_sha[0] && strcmp(j->dir, j->current_dir) == 0) {
        fm_model_t *m = NULL;
        int rc = fm_model_load(j->dir, &m);
        if (rc == 0 && strcmp(fm_model_weights_sha256(m), j->current_sha) == 0) {
            fm_model_free(m);
            j->identical = 1;
            return;
        }
        fm_model_free(m);
        if (rc) {
            j->status = rc;
            snprintf(j->detail, sizeof j->detail, "%s", fm_last_error());
            return;
        }
    }
    j->status = fm_slot_load(j->srv, j->role, j->dir, &j->slot);
    if (j->status) {
        snprintf(j->detail, sizeof j->detail, "%s", fm_last_error());
        return;
    }
    /* What a registry recorded must be what was loaded: a directory whose
     * files were replaced by another valid model is refused too. */
    if (j->expect_sha[0] && strcmp(j->slot->sha256, j->expect_sha) != 0) {
        j->status = FM_ECHECKSUM;
        snprintf(j->detail, sizeof j->detail,
                 "%.300s: the weights have sha256 %.16s..., the registry recorded %.16s... for version %.63s", j->dir,
                 j->slot->sha256, j->expect_sha, j->expect_version[0] ? j->expect_version : "?");
    } else if (j->expect_version[0] && strcmp(j->slot->version, j->expect_version) != 0) {
        j->status = FM_EINVAL;
        snprintf(j->detail, sizeof j->detail, "%.300s holds version %.63s, the registry expects %.63s", j->dir,
                 j->slot->version, j->expect_version);
    }
    if (j->status) {
        fm_slot_destroy(j->srv, j->slot);
        j->slot = NULL;
    }
}

static void load_done(uv_work_t *w, int uvstatus) {
    load_job_t *j = (load_job_t *)w;
    fm_server_t *srv = j->srv;
    srv->loading[j->role] = 0;
    int status = j->status;
    if (uvstatus < 0 && status == 0) {
        status = FM_ECANCELED;
        snprintf(j->detail, sizeof j->detail, "load cancelled: %s", uv_strerror(uvstatus));
    }
    if (status == 0 && j->slot && !srv->stopping) {
        fm_slot_install(srv, j->role, j->slot);
        srv->metrics.reloads_ok++;
    } else if (status == 0 && j->identical) {
        fm_info("server", "%s model in %s unchanged (same weights); nothing to swap", fm_role_name(j->role), j->dir);
        srv->metrics.reloads_ok++;
    } else {
        if (j->slot)
            fm_slot_destroy(srv, j->slot);
        if (status == 0)
            status = FM_ECANCELED;
        srv->metrics.reloads_failed++;
        fm_error("server", "loading %s model from %s failed; the current version keeps serving: %s",
                 fm_role_name(j->role), j->dir, j->detail[0] ? j->detail : fm_strerror(status));
        fm_fail(status, "%s", j->detail);
    }
    if (j->cb)
        j->cb(srv, j->role, status, j->user);
    free(j);
}

int fm_server_load_model(fm_server_t *srv, fm_role_t role, const char *dir, fm_server_load_cb cb, void *user) {
    return fm_server_load_model_expect(srv, role, dir, NULL, NULL, cb, user);
}

int fm_server_load_model_expect(fm_server_t *srv, fm_role_t role, const char *dir, const char *version,
                                const char *sha256, fm_server_load_cb cb, void *user) {
    if ((unsigned)role >= FM_NROLES)
        return fm_fail(FM_EINVAL, "unknown role %d", (int)role);
    if (srv->loading[role])
        return fm_fail(FM_EUNAVAILABLE, "a load of the %s model is already running", fm_role_name(role));
    if (!dir || !*dir) {
        if (role == FM_ROLE_STABLE)
            return fm_fail(FM_EINVAL, "the stable role cannot be emptied");
        fm_slot_install(srv, role, NULL);
        if (cb)
            cb(srv, role, 0, user);
        return 0;
    }
    load_job_t *j = calloc(1, sizeof *j);
    if (!j)
        return fm_fail(FM_ENOMEM, "load job");
    if (strlen(dir) >= sizeof j->dir) {
        free(j);
        return fm_fail(FM_EINVAL, "model directory path too long");
    }
    j->srv = srv;
    j->role = role;
    snprintf(j->dir, sizeof j->dir, "%s", dir);
    snprintf(j->expect_version, sizeof j->expect_version, "%s", version ? version : "");
    snprintf(j->expect_sha, sizeof j->expect_sha, "%s", sha256 ? sha256 : "");
    fm_slot_t *cur = srv->active[role];
    if (cur) {
        snprintf(j->current_dir, sizeof j->current_dir, "%s", cur->dir);
        snprintf(j->current_sha, sizeof j->current_sha, "%s", cur->sha256);
    }
    j->cb = cb;
    j->user = user;
    int rc = uv_queue_work(&srv->loop, &j->work, load_work, load_done);
    if (rc < 0) {
        free(j);
        return fm_fail(FM_EINTERNAL, "uv_queue_work: %s", uv_strerror(rc));
    }
    srv->loading[role] = 1;
    return 0;
}
