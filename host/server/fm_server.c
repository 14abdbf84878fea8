/* fm_server.c: the server's life: start-up (backend, models, ports), the
 * signals (SIGTERM/SIGINT drain, SIGHUP reload), readiness, and an orderly
 * teardown in which every handle is closed before the loop is. */
#include "fm_server.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fm_error.h"
#include "fm_log.h"
#include "fm_server_int.h"
#include "fm_time.h"

static int log_level_of(const char *s) {
    if (!strcmp(s, "debug"))
        return FM_LOG_DEBUG;
    if (!strcmp(s, "warn"))
        return FM_LOG_WARN;
    if (!strcmp(s, "error"))
        return FM_LOG_ERROR;
    return FM_LOG_INFO;
}

uv_loop_t *fm_server_loop(fm_server_t *srv) { return &srv->loop; }
int fm_server_rpc_port(const fm_server_t *srv) { return srv->rpc_port; }
int fm_server_http_port(const fm_server_t *srv) { return srv->http_port; }

int fm_server_model_info(const fm_server_t *srv, fm_role_t role, fm_model_info_t *out) {
    memset(out, 0, sizeof *out);
    const fm_slot_t *s = (unsigned)role < FM_NROLES ? srv->active[role] : NULL;
    if (!s)
        return fm_fail(FM_ENOTFOUND, "no %s model is loaded", fm_role_name(role));
    memcpy(out->name, s->name, sizeof out->name);
    memcpy(out->version, s->version, sizeof out->version);
    memcpy(out->sha256, s->sha256, sizeof out->sha256);
    memcpy(out->dir, s->dir, sizeof out->dir);
    memcpy(out->arch, s->arch, sizeof out->arch);
    out->loaded_wall_us = s->loaded_wall_us;
    return 0;
}

int fm_server_add_sink(fm_server_t *srv, fm_sink_t *sink) {
    if (!sink || !sink->on_prediction)
        return fm_fail(FM_EINVAL, "a sink needs on_prediction");
    if (srv->nsinks >= (int)(sizeof srv->sinks / sizeof srv->sinks[0]))
        return fm_fail(FM_EINVAL, "at most %zu sinks", sizeof srv->sinks / sizeof srv->sinks[0]);
    srv->sinks[srv->nsinks++] = sink;
    return 0;
}

void fm_server_set_registry_status(fm_server_t *srv, const fm_registry_status_t *st) {
    srv->registry_enabled = st != NULL;
    if (st)
        srv->registry = *st;
}

int fm_server_add_stop_hook(fm_server_t *srv, fm_server_stop_fn fn, void *user) {
    if (srv->nstop_hooks >= (int)(sizeof srv->stop_hooks / sizeof srv->stop_hooks[0]))
        return fm_fail(FM_EINVAL, "at most %zu stop hooks", sizeof srv->stop_hooks / sizeof srv->stop_hooks[0]);
    srv->stop_hooks[srv->nstop_hooks] = fn;
    srv->stop_hook_users[srv->nstop_hooks] = user;
    srv->nstop_hooks++;
    return 0;
}

int fm_server_set_split(fm_server_t *srv, double ratio) {
    if (!(ratio >= 0.0 && ratio <= 1.0))
        return fm_fail(FM_EINVAL, "the canary share must be in 0..1, got %g", ratio);
    srv->ab_ratio = ratio;
    return 0;
}

int fm_server_is_ready(const fm_server_t *srv, const char **why) {
    const char *w = NULL;
    if (srv->draining)
        w = "draining";
    else if (!srv->active[FM_ROLE_STABLE])
        w = "no stable model loaded";
    else if (!srv->batcher_ready || !srv->rpc_listening)
        w = "starting";
    if (why)
        *why = w ? w : "";
    return w == NULL;
}

/* ---- Teardown ----------------------------------------------------------- */

static void close_if_open(uv_handle_t *h, void *arg) {
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Stops the loop's work: every connection and handle closed, so uv_run
 * returns once their close callbacks ran. */
static void finish(fm_server_t *srv) {
    if (srv->stopping)
        return;
    srv->stopping = 1;
    if (!srv->stop_hooks_ran) {
        srv->stop_hooks_ran = 1;
        for (int i = 0; i < srv->nstop_hooks; i++)
            srv->stop_hooks[i](srv, srv->stop_hook_users[i]);
    }
    fm_conn_close_all(srv);
    fm_http_close_all(srv);
    uv_walk(&srv->loop, close_if_open, NULL);
}

void fm_server_drain_check(fm_server_t *srv) {
    if (!srv->draining || srv->stopping)
        return;
    if (srv->live_requests || srv->jobs_inflight)
        return;
    /* Replies still on their way out get written first, unless the grace
     * period and its one-second write allowance are both over. */
    if (!srv->drain_forced && !fm_conn_all_flushed(srv))
        return;
    fm_info("server", "drained: every accepted request answered%s; exiting",
            srv->drain_timed_out ? " (some with UNAVAILABLE after the grace period)" : "");
    finish(srv);
}

static void on_drain_timeout(uv_timer_t *t) {
    fm_server_t *srv = t->data;
    if (srv->drain_timed_out) {
        fm_warn("server", "replies still unwritten one second after the grace period (clients not reading); "
                          "closing their connections");
        srv->drain_forced = 1;
        fm_server_drain_check(srv);
        return;
    }
    uv_timer_start(&srv->drain_timer, on_drain_timeout, 1000, 0);
    fm_warn("server", "drain grace period of %d ms is over: %zu requests still open; answering the queued ones "
                      "UNAVAILABLE",
            srv->cfg.drain_timeout_ms, srv->live_requests);
    srv->drain_timed_out = 1;
    srv->exit_code = 1;
    fm_batcher_fail_queued(srv, FM_PROTO_UNAVAILABLE, "the server shut down before this request was computed");
    fm_server_drain_check(srv);
}

static void start_drain(fm_server_t *srv, const char *why) {
    srv->draining = 1;
    fm_info("server", "%s: not ready any more, no new connections; draining %zu open requests (grace %d ms)", why,
            srv->live_requests, srv->cfg.drain_timeout_ms);
    if (srv->rpc_listening) {
        uv_close((uv_handle_t *)&srv->rpc_listener, NULL);
        srv->rpc_listening = 0;
    }
    uv_timer_start(&srv->drain_timer, on_drain_timeout, (uint64_t)srv->cfg.drain_timeout_ms, 0);
    fm_batcher_pump(srv); /* queue delays no longer apply */
    fm_server_drain_check(srv);
}

static void on_stop_signal(uv_signal_t *h, int signum) {
    fm_server_t *srv = h->data;
    if (srv->draining) {
        fm_warn("server", "second %s while draining: exiting now", signum == SIGINT ? "SIGINT" : "SIGTERM");
        _exit(1);
    }
    start_drain(srv, signum == SIGINT ? "SIGINT" : "SIGTERM");
}

/* ---- SIGHUP ------------------------------------------------------------- */

static void reload_now(fm_server_t *srv);

static void on_reload_done(fm_server_t *srv, fm_role_t role, int status, void *user) {
    (void)role;
    (void)status;
    (void)user;
    if (--srv->reload_running > 0)
        return;
    fm_info("server", "reload finished");
    if (srv->reload_again && !srv->draining) {
        srv->reload_again = 0;
        reload_now(srv);
    }
}

static int option_changed(const fm_option_t *o, const fm_config_t *a, const fm_config_t *b) {
    const char *pa = (const char *)a + o->offset, *pb = (const char *)b + o->offset;
    if (o->type == FM_OPT_STRING || o->type == FM_OPT_ENUM)
        return strcmp(pa, pb) != 0;
    return memcmp(pa, pb, o->size) != 0;
}

static void reload_now(fm_server_t *srv) {
    fm_config_t nc;
    if (fm_config_reload(&srv->cfg, &nc) != 0) {
        srv->metrics.reloads_failed++;
        fm_error("server", "SIGHUP: configuration not reloaded, nothing changed: %s", fm_last_error());
        return;
    }
    int nopt;
    const fm_option_t *opts = fm_config_options(&nopt);
    for (int i = 0; i < nopt; i++) {
        const fm_option_t *o = &opts[i];
        if (!(o->flags & FM_OPT_RELOAD) && strcmp(o->name, "config_file") != 0 && option_changed(o, &srv->cfg, &nc))
            fm_warn("server", "SIGHUP: %s changed in the configuration; restart fmserve to apply it", o->name);
    }
    /* A set_split override survives a SIGHUP that leaves the configured
     * ratio as it was. */
    if (nc.ab_test_ratio != srv->cfg_ab_ratio) {
        fm_info("server", "SIGHUP: ab_test_ratio %.4f -> %.4f", srv->ab_ratio, nc.ab_test_ratio);
        srv->ab_ratio = nc.ab_test_ratio;
        srv->cfg_ab_ratio = nc.ab_test_ratio;
    }
    srv->max_queue_delay_us = nc.max_queue_delay_us;
    srv->max_queue_size = nc.max_queue_size;
    fm_log_set_level((fm_log_level_t)log_level_of(nc.log_level));
    srv->cfg.ab_test_ratio = nc.ab_test_ratio;
    srv->cfg.max_queue_delay_us = nc.max_queue_delay_us;
    srv->cfg.max_queue_size = nc.max_queue_size;
    memcpy(srv->cfg.log_level, nc.log_level, sizeof nc.log_level);
    memcpy(srv->cfg.stable_model, nc.stable_model, sizeof nc.stable_model);
    memcpy(srv->cfg.canary_model, nc.canary_model, sizeof nc.canary_model);

    srv->reload_running = 1; /* held until both loads are started */
    if (strcmp(srv->cfg.model_source, "registry") == 0) {
        /* The registry decides which versions serve; the directories in the
         * configuration do not apply. */
        fm_info("server", "SIGHUP: models follow the registry; settings reloaded, models left as they are");
        on_reload_done(srv, FM_ROLE_STABLE, 0, NULL);
        return;
    }
    for (int r = 0; r < FM_NROLES; r++) {
        const char *dir = r == FM_ROLE_STABLE ? nc.stable_model : nc.canary_model;
        srv->reload_running++;
        if (fm_server_load_model(srv, (fm_role_t)r, dir, on_reload_done, NULL) != 0) {
            fm_error("server", "SIGHUP: %s model not reloaded: %s", fm_role_name((fm_role_t)r), fm_last_error());
            srv->reload_running--;
        }
    }
    on_reload_done(srv, FM_ROLE_STABLE, 0, NULL);
}

static void on_hup(uv_signal_t *h, int signum) {
    fm_server_t *srv = h->data;
    (void)signum;
    if (srv->draining)
        return;
    if (srv->reload_running) {
        srv->reload_again = 1;
        return;
    }
    fm_info("server", "SIGHUP: reloading the configuration and the models");
    reload_now(srv);
}

/* ---- Start-up ----------------------------------------------------------- */

static int bind_listener(fm_server_t *srv, uv_tcp_t *t, int port, uv_connection_cb cb, const char *what, int *bound) {
    struct sockaddr_storage ss;
    const char *addr = srv->cfg.listen_address;
    int rc = strchr(addr, ':') ? uv_ip6_addr(addr, port, (struct sockaddr_in6 *)&ss)
                               : uv_ip4_addr(addr, port, (struct sockaddr_in *)&ss);
    if (rc)
        return fm_fail(FM_EINVAL, "--listen (FM_LISTEN): '%s' is not an IPv4 or IPv6 address", addr);
    uv_tcp_init(&srv->loop, t);
    t->data = srv;
    if ((rc = uv_tcp_bind(t, (struct sockaddr *)&ss, 0)) == 0)
        rc = uv_listen((uv_stream_t *)t, 511, cb);
    if (rc)
        return fm_fail(FM_ENETWORK, "cannot listen for %s on %s port %d: %s", what, addr, port, uv_strerror(rc));
    int len = sizeof ss;
    uv_tcp_getsockname(t, (struct sockaddr *)&ss, &len);
    *bound = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                            : ((struct sockaddr_in *)&ss)->sin_port);
    return 0;
}

static int write_ports_file(fm_server_t *srv) {
    const char *path = srv->cfg.ports_file;
    if (!path[0])
        return 0;
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f)
        return fm_fail(FM_EIO, "--ports-file %s: %s", tmp, strerror(errno));
    fprintf(f, "%d %d\n", srv->rpc_port, srv->http_port);
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return fm_fail(FM_EIO, "--ports-file %s: %s", path, strerror(errno));
    }
    return 0;
}

int fm_server_new(const fm_config_t *cfg, fm_server_t **out) {
    *out = NULL;
    fm_server_t *srv = calloc(1, sizeof *srv);
    if (!srv)
        return fm_fail(FM_ENOMEM, "server");
    srv->cfg = *cfg;
    srv->started_us = fm_now_us();
    srv->started_wall_us = fm_wall_us();
    fm_log_set_level((fm_log_level_t)log_level_of(cfg->log_level));
    srv->ab_ratio = srv->cfg_ab_ratio = cfg->ab_test_ratio;
    srv->max_queue_delay_us = cfg->max_queue_delay_us;
    srv->max_queue_size = cfg->max_queue_size;
    /* A predict frame holds at most one value per image plus a few dozen
     * others, four levels deep; anything beyond is refused from its headers. */
    srv->limits.max_frame_bytes = (size_t)cfg->max_message_bytes;
    srv->limits.max_objects = (uint32_t)cfg->max_images_per_request + 256;
    srv->limits.max_depth = 8;
    int rc = uv_loop_init(&srv->loop);
    if (rc) {
        free(srv);
        return fm_fail(FM_EINTERNAL, "uv_loop_init: %s", uv_strerror(rc));
    }
    *out = srv; /* from here fm_server_free cleans up whatever was built */

    fm_backend_config_t bc;
    fm_backend_config_default(&bc);
    bc.threads = cfg->cpu_threads_per_batch;
    bc.streams = cfg->cuda_streams;
    bc.device = cfg->cuda_device;
    bc.max_batch = cfg->max_batch_size;
    bc.cuda_graphs = cfg->cuda_graphs;
    if ((rc = fm_precision_parse(cfg->precision, &bc.precision)) != 0)
        return rc;
    if ((rc = fm_engine_open(cfg->backend, &bc, &srv->engine)) != 0)
        return rc;
    srv->engine_open = 1;
    fm_engine_describe(&srv->engine, srv->backend_desc, sizeof srv->backend_desc);

    for (int r = 0; r < FM_NROLES; r++) {
        const char *dir = r == FM_ROLE_STABLE ? cfg->stable_model : cfg->canary_model;
        if (!dir[0])
            continue;
        fm_slot_t *slot;
        if ((rc = fm_slot_load(srv, (fm_role_t)r, dir, &slot)) != 0) {
            char detail[700];
            snprintf(detail, sizeof detail, "%s", fm_last_error());
            return fm_fail(rc, "%s model (%s): %s%s", fm_role_name((fm_role_t)r),
                           r == FM_ROLE_STABLE ? "--stable-model" : "--canary-model", detail,
                           r == FM_ROLE_CANARY ? " (set --canary-model '' to serve without a canary)" : "");
        }
        fm_slot_install(srv, (fm_role_t)r, slot);
    }

    if ((rc = fm_batcher_init(srv)) != 0)
        return rc;
    uv_prepare_init(&srv->loop, &srv->flush_prepare);
    srv->flush_prepare.data = srv;
    uv_prepare_start(&srv->flush_prepare, fm_conn_flush_all);
    uv_timer_init(&srv->loop, &srv->drain_timer);
    srv->drain_timer.data = srv;
    uv_signal_init(&srv->loop, &srv->sig_term);
    uv_signal_init(&srv->loop, &srv->sig_int);
    uv_signal_init(&srv->loop, &srv->sig_hup);
    srv->sig_term.data = srv->sig_int.data = srv->sig_hup.data = srv;
    uv_signal_start(&srv->sig_term, on_stop_signal, SIGTERM);
    uv_signal_start(&srv->sig_int, on_stop_signal, SIGINT);
    uv_signal_start(&srv->sig_hup, on_hup, SIGHUP);

    if ((rc = bind_listener(srv, &srv->http_listener, cfg->http_port, fm_http_on_connection, "HTTP",
                            &srv->http_port)) != 0)
        return rc;
    srv->http_listening = 1;
    if ((rc = bind_listener(srv, &srv->rpc_listener, cfg->port, fm_conn_on_connection, "RPC", &srv->rpc_port)) != 0)
        return rc;
    srv->rpc_listening = 1;
    if ((rc = write_ports_file(srv)) != 0)
        return rc;
    fm_slot_t *st = srv->active[FM_ROLE_STABLE], *ca = srv->active[FM_ROLE_CANARY];
    fm_info("server", "fmserve ready: rpc %s:%d, http %s:%d; backend %s; stable %s %s, canary %s%s%s; A/B %.4f",
            cfg->listen_address, srv->rpc_port, cfg->listen_address, srv->http_port, srv->backend_desc, st->name,
            st->version, ca ? ca->name : "none", ca ? " " : "", ca ? ca->version : "", srv->ab_ratio);
    return 0;
}

int fm_server_run(fm_server_t *srv) {
    uv_run(&srv->loop, UV_RUN_DEFAULT);
    return srv->exit_code;
}

void fm_server_free(fm_server_t *srv) {
    if (!srv)
        return;
    /* Workers first, so no batch still reads a request's pixels. */
    fm_batcher_shutdown(srv);
    if (srv->done_async.loop) {
        /* Completed batches nobody processed (only when run was cut short). */
        fm_job_t *job = srv->done_head;
        srv->done_head = srv->done_tail = NULL;
        while (job) {
            fm_job_t *next = job->next;
            fm_slot_unref(srv, job->slot);
            job = next;
        }
    }
    srv->stopping = 0;
    finish(srv);
    uv_run(&srv->loop, UV_RUN_DEFAULT);
    uv_loop_close(&srv->loop);
    for (int i = 0; i < srv->nsinks; i++)
        if (srv->sinks[i]->close)
            srv->sinks[i]->close(srv->sinks[i]);
    for (int r = 0; r < FM_NROLES; r++) {
        fm_slot_t *s = srv->active[r];
        srv->active[r] = NULL;
        if (s)
            fm_slot_unref(srv, s);
    }
    while (srv->slots) { /* only left when requests were cut off */
        fm_slot_t *s = srv->slots;
        srv->slots = s->next;
        fm_slot_destroy(srv, s);
    }
    if (srv->engine_open)
        fm_engine_close(&srv->engine);
    fm_metrics_free(&srv->metrics);
    free(srv);
}
