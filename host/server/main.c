/* main.c: fmserve's entry point: configuration (exit 2 when it is wrong),
 * the model versions from directories or the registry, the prediction log
 * when a database is configured, then the server's life (exit 0 after a
 * clean drain, 1 on failure). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_config.h"
#include "fm_error.h"
#include "fm_follow.h"
#include "fm_log.h"
#include "fm_pg_writer.h"
#include "fm_server.h"

int main(int argc, char **argv) {
    fm_config_t cfg;
    fm_config_action_t action;
    if (fm_config_load(&cfg, argc, argv, &action) != 0) {
        fprintf(stderr, "fmserve: configuration error: %s\n", fm_last_error());
        return 2;
    }
    switch (action) {
    case FM_CONFIG_HELP:
        fm_config_print_help(stdout);
        return 0;
    case FM_CONFIG_MARKDOWN: {
        char *md = fm_config_markdown();
        if (!md)
            return 1;
        fputs(md, stdout);
        free(md);
        return 0;
    }
    case FM_CONFIG_VERSION:
        printf("fmserve %s\n", FM_VERSION);
        return 0;
    case FM_CONFIG_RUN:
        break;
    }
    /* A client that vanishes must cost an EPIPE, not the process. */
    signal(SIGPIPE, SIG_IGN);
    fm_config_log(&cfg);
    /* Registry mode: the versions the registry assigns replace the
     * configured directories, and a follower keeps them current. */
    int from_registry = strcmp(cfg.model_source, "registry") == 0;
    fm_follow_config_t fc;
    fm_follow_config_default(&fc);
    fc.database_url = cfg.database_url;
    fc.cache_dir = cfg.model_cache_dir;
    fc.tracking_uri = cfg.mlflow_tracking_uri;
    if (from_registry &&
        fm_follow_resolve(&fc, cfg.stable_model, sizeof cfg.stable_model, cfg.canary_model, sizeof cfg.canary_model) !=
            0) {
        fm_error("server", "cannot start: model registry: %s", fm_last_error());
        return 1;
    }
    /* The prediction log starts first: the ports file that tells the world
     * the server is ready is written by fm_server_new, and a server whose
     * log cannot start (its spool is another process's) must not look
     * ready, even for a moment. */
    fm_sink_t *log = NULL;
    if (cfg.database_url[0]) {
        fm_pg_writer_config_t lc;
        fm_pg_writer_config_default(&lc);
        lc.database_url = cfg.database_url;
        lc.spool_dir = cfg.spool_dir;
        lc.spool_max_bytes = (uint64_t)cfg.spool_max_mb << 20;
        lc.buffer_bytes = (size_t)cfg.log_buffer_mb << 20;
        lc.batch_rows = cfg.log_batch_rows;
        lc.flush_ms = cfg.log_flush_ms;
        lc.connections = cfg.log_connections;
        lc.sample_rate = cfg.sample_rate;
        lc.log_predictions = cfg.log_predictions;
        /* After the drain, the log gets up to 10 s to write what it holds
         * (normally well under a second) before it spools the rest, so
         * that drain plus flush fits a pod's grace period. */
        lc.shutdown_timeout_ms = cfg.drain_timeout_ms < 10000 ? cfg.drain_timeout_ms : 10000;
        if (fm_pg_writer_new(&lc, &log) != 0) {
            fm_error("server", "cannot start the prediction log: %s", fm_last_error());
            return 1;
        }
    } else {
        fm_info("server", "prediction log off (no FM_DATABASE_URL); the feedback method is refused");
    }
    fm_server_t *srv = NULL;
    if (fm_server_new(&cfg, &srv) != 0 || (log && fm_server_add_sink(srv, log) != 0)) {
        fm_error("server", "cannot start: %s", fm_last_error());
        fm_server_free(srv);
        if (log) /* never added to the server, so not closed by it */
            log->close(log);
        return 1;
    }
    fm_follow_t *follow = NULL;
    if (from_registry && fm_follow_start(srv, &fc, &follow) != 0) {
        fm_error("server", "cannot start the registry follower: %s", fm_last_error());
        fm_server_free(srv);
        fm_follow_free(follow);
        return 1;
    }
    int code = fm_server_run(srv);
    fm_server_free(srv); /* stops the follower through its stop hook */
    fm_follow_free(follow);
    return code;
}
