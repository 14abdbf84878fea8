/* test_registry_follow.c: fmserve --models-from registry against a real
 * PostgreSQL: a promotion and a rollback under continuous pipelined load
 * with zero failed requests, every reply naming the version that computed
 * it (and its labels matching that version's), and each connection's
 * replies, in the order it sent them, switching version exactly once per
 * role change; a corrupt or replaced artifact refused while the old version
 * keeps serving; a lost LISTEN connection re-established with the missed
 * change picked up; start-up from the registry and its failures. */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "dbtest.h"
#include "fm_aclient.h"
#include "fm_db.h"
#include "fm_pg.h"
#include "fm_srv_harness.h"
#include "fm_test.h"
#include "fm_time.h"
#include "regtest.h"

#define NCONN 4
#define DEPTH 8
#define MAXSEQ 400000
#define IMAGES 8

static fm_dataset_t ds;
static char mdir[512];

static int fixture(void) { return ds.n || fm_srv_fixture(&ds) == 0; }

/* <tmp>/follow/vN: v1 mlp seed 1, v2 mlp seed 5, v3 mlp seed 9, v4 mlp seed 13. */
static char *model(int n) {
    if (!mdir[0]) {
        snprintf(mdir, sizeof mdir, "%s/follow", fm_test_tmpdir());
        mkdir(mdir, 0755);
    }
    char *p = malloc(600);
    snprintf(p, 600, "%s/v%d", mdir, n);
    struct stat st;
    if (stat(p, &st) != 0) {
        char v[8];
        snprintf(v, sizeof v, "v%d", n);
        if (regtest_write_model(p, 0, (uint64_t)(4 * n - 3), v, 0.8, NULL) != 0) {
            fprintf(stderr, "cannot write %s: %s\n", p, fm_last_error());
            exit(1);
        }
    }
    return p;
}

static int fmctl(const char *url, char **out, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fmctl(const char *url, char **out, const char *fmt, ...) {
    char args[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    char *o = NULL;
    int rc = regtest_fmctl(url, args, &o);
    if (rc != 0)
        fprintf(stderr, "  fmctl %s -> %d: %s\n", args, rc, o ? o : "");
    if (out)
        *out = o;
    else
        free(o);
    return rc;
}

static int start_server(fm_srv_t *s, const char *url) {
    const char *args[] = {"--models-from", "registry", "--database-url", url, "--max-batch-size", "16",
                          "--cpu-workers", "2", "--ab-test-ratio", "0", NULL};
    return fm_srv_start(s, args, NULL);
}

/* The `registry` map of the models RPC: field as text ("" when nil). */
static int registry_field(const fm_srv_t *s, const char *field, char *out, size_t cap) {
    out[0] = '\0';
    fm_client_t *c = fm_srv_connect(s);
    if (!c)
        return -1;
    fm_mp_msg_t *m;
    const fm_mp_obj_t *e, *r;
    int rc = fm_srv_call0(c, "models", &m, &e, &r);
    if (rc == 0) {
        const fm_mp_obj_t *v = fm_mp_map_get(fm_mp_map_get(r, "registry"), field);
        if (!v)
            rc = -1;
        else if (fm_mp_type(v) == FM_MP_STR)
            fm_mp_copy_str(v, out, cap);
        else if (fm_mp_type(v) != FM_MP_NIL)
            fm_mp_to_text(v, out, cap);
        fm_mp_msg_free(m);
    }
    fm_client_close(c);
    return rc;
}

static double metric(const fm_srv_t *s, const char *prefix) {
    char *body;
    double v = fm_srv_http_get(s->http_port, "/metrics", &body) == 200 ? fm_srv_metric(body, prefix) : -1;
    free(body);
    return v;
}

/* Waits up to timeout_ms for the models RPC's registry.field to equal want. */
static int wait_field(const fm_srv_t *s, const char *field, const char *want, int timeout_ms) {
    char v[256];
    for (int waited = 0; waited <= timeout_ms; waited += 50) {
        if (registry_field(s, field, v, sizeof v) == 0 && strcmp(v, want) == 0)
            return 1;
        usleep(50000);
    }
    fprintf(stderr, "  registry.%s is '%s' after %d ms, expected '%s'\n", field, v, timeout_ms, want);
    return 0;
}

/* The version serving the stable role, by a predict reply. */
static void served_version(const fm_srv_t *s, char *out, size_t cap) {
    out[0] = '\0';
    fm_client_t *c = fm_srv_connect(s);
    if (!c)
        return;
    fm_mp_buf_t b;
    fm_mp_buf_init(&b);
    fm_proto_begin_request(&b, 1, "predict", 1);
    fm_mp_pack_map(&b, 1);
    fm_mp_pack_key(&b, "images");
    fm_mp_pack_bin(&b, ds.images, 784);
    fm_mp_msg_t *m;
    const fm_mp_obj_t *e, *r;
    if (fm_client_send_raw(c, b.data, b.len) == 0 && fm_client_recv(c, &m) == 0) {
        uint64_t id;
        if (fm_proto_parse_response(m->root, &id, &e, &r) == 0 && !e)
            fm_mp_copy_str(fm_mp_map_get(r, "model_version"), out, cap);
        fm_mp_msg_free(m);
    }
    fm_mp_buf_free(&b);
    fm_client_close(c);
}

/* ---- continuous load with role changes --------------------------------- */

typedef struct step {
    const char *args;   /* fmctl arguments (run with --database-url) */
    const char *expect; /* the version every connection must reach after it */
} step_t;

typedef struct load {
    uv_loop_t loop;
    uv_timer_t timer;
    fm_aclient_t *c[NCONN];
    uint32_t next_seq[NCONN];
    int8_t *ver[NCONN]; /* version index by request order, -1 until answered */
    const char *versions[4];
    int32_t *want[4];
    int nversions;
    uint64_t replies, errors, wrong_labels, unknown_version;
    uint64_t by_version[4];
    const step_t *steps;
    int nsteps, step, step_running, step_exit;
    uint64_t step_started_us, count_at_step;
    int stopping, closed, done;
    uint64_t t_start, deadline_us;
    const char *url;
    uv_process_t proc;
    char step_out[64];
} load_t;

static load_t L;

typedef struct rq {
    int conn;
    uint32_t seq;
    size_t first;
} rq_t;

static void send_next(int conn);

static int version_index(const fm_mp_obj_t *v) {
    for (int i = 0; i < L.nversions; i++)
        if (fm_mp_str_eq(v, L.versions[i]))
            return i;
    return -1;
}

static void on_reply(fm_aclient_t *c, int status, const fm_mp_obj_t *error, const fm_mp_obj_t *result,
                     uint64_t latency_us, void *user) {
    rq_t *q = user;
    (void)latency_us;
    (void)c;
    if (status == 0 && error) {
        char t[300];
        if (L.errors < 5)
            fprintf(stderr, "  error reply: %s\n", fm_mp_to_text(error, t, sizeof t));
        L.errors++;
    } else if (status == 0) {
        int v = version_index(fm_mp_map_get(result, "model_version"));
        if (v < 0) {
            L.unknown_version++;
        } else {
            const fm_mp_obj_t *preds = fm_mp_map_get(result, "predictions");
            for (uint32_t i = 0; i < fm_mp_len(preds); i++) {
                uint64_t label = 99;
                fm_mp_get_u64(fm_mp_map_get(fm_mp_at(preds, i), "label"), &label);
                if ((int32_t)label != L.want[v][q->first + i])
                    L.wrong_labels++;
            }
            L.by_version[v]++;
            if (q->seq < MAXSEQ)
                L.ver[q->conn][q->seq] = (int8_t)v;
        }
        L.replies++;
    } else if (!L.stopping) {
        L.errors++; /* the connection broke */
    }
    int conn = q->conn;
    free(q);
    if (status != 0)
        return;
    if (!L.stopping) {
        send_next(conn);
    } else if (fm_aclient_inflight(L.c[conn]) == 0) {
        fm_aclient_close(L.c[conn], NULL, NULL);
        if (++L.closed == NCONN)
            uv_close((uv_handle_t *)&L.timer, NULL);
    }
}

static void send_next(int conn) {
    rq_t *q = malloc(sizeof *q);
    q->conn = conn;
    q->seq = L.next_seq[conn]++;
    q->first = (size_t)((fm_now_ns() / 1000) % (ds.n - IMAGES));
    if (fm_aclient_predict(L.c[conn], ds.images + q->first * 784, IMAGES, NULL, on_reply, q) != 0) {
        free(q);
        L.errors++;
    }
}

static void on_connect(fm_aclient_t *c, int status, void *user) {
    int conn = (int)(intptr_t)user;
    if (status != 0) {
        L.errors++;
        return;
    }
    L.c[conn] = c;
    for (int i = 0; i < DEPTH; i++)
        send_next(conn);
}

static void on_step_exit(uv_process_t *p, int64_t exit_status, int term_signal) {
    (void)term_signal;
    L.step_exit = (int)exit_status;
    L.step_running = 0;
    uv_close((uv_handle_t *)p, NULL);
}

static void spawn_step(const step_t *st) {
    static char buf[1024];
    static char *argv[32];
    snprintf(buf, sizeof buf, "%s", st->args);
    int a = 0;
    argv[a++] = (char *)regtest_fmctl_path();
    for (char *save = NULL, *t = strtok_r(buf, " ", &save); t && a < 28; t = strtok_r(NULL, " ", &save))
        argv[a++] = t;
    argv[a++] = "--database-url";
    argv[a++] = (char *)L.url;
    argv[a] = NULL;
    uv_stdio_container_t io[3] = {{.flags = UV_IGNORE}, {.flags = UV_INHERIT_FD, .data.fd = 1},
                                  {.flags = UV_INHERIT_FD, .data.fd = 2}};
    uv_process_options_t o = {.exit_cb = on_step_exit, .file = argv[0], .args = argv, .stdio_count = 3,
                              .stdio = io};
    L.step_running = 1;
    L.step_exit = -1;
    L.step_started_us = fm_now_us();
    int rc = uv_spawn(&L.loop, &L.proc, &o);
    if (rc) {
        fprintf(stderr, "  uv_spawn: %s\n", uv_strerror(rc));
        L.step_running = 0;
        L.step_exit = 127;
    }
}

static int expect_index(const char *v) {
    for (int i = 0; i < L.nversions; i++)
        if (!strcmp(L.versions[i], v))
            return i;
    return -1;
}

static void on_tick(uv_timer_t *t) {
    uint64_t now = fm_now_us();
    if (now > L.deadline_us) {
        fprintf(stderr, "  load: deadline reached at step %d\n", L.step);
        L.stopping = 1;
        uv_timer_stop(t);
        return;
    }
    if (L.step < L.nsteps) {
        const step_t *st = &L.steps[L.step];
        if (!L.step_started_us && now - L.t_start > 300000) {
            L.count_at_step = L.by_version[expect_index(st->expect)];
            spawn_step(st);
        } else if (L.step_started_us && !L.step_running) {
            if (L.step_exit != 0) {
                fprintf(stderr, "  step '%s' exited %d\n", st->args, L.step_exit);
                L.stopping = 1;
                uv_timer_stop(t);
                return;
            }
            /* Enough replies from the expected version: on to the next step. */
            if (L.by_version[expect_index(st->expect)] >= L.count_at_step + 300) {
                L.step++;
                L.step_started_us = 0;
                L.t_start = now - 300000 + 150000; /* the next step 150 ms from now */
            }
        }
        return;
    }
    L.stopping = 1;
    uv_timer_stop(t);
}

/* Runs the load against `s` while the steps run one after the other. */
static void run_load(const fm_srv_t *s, const char *url, const step_t *steps, int nsteps, const char *const *versions,
                     int nversions) {
    memset(&L, 0, sizeof L);
    L.url = url;
    L.steps = steps;
    L.nsteps = nsteps;
    L.nversions = nversions;
    for (int i = 0; i < nversions; i++) {
        L.versions[i] = versions[i];
        char *dir = model(atoi(versions[i] + 1));
        L.want[i] = malloc(ds.n * sizeof(int32_t));
        if (fm_srv_offline(dir, ds.images, ds.n, L.want[i], NULL) != 0)
            fprintf(stderr, "  offline labels of %s: %s\n", dir, fm_last_error());
        free(dir);
    }
    for (int c = 0; c < NCONN; c++) {
        L.ver[c] = malloc(MAXSEQ);
        memset(L.ver[c], -1, MAXSEQ);
    }
    uv_loop_init(&L.loop);
    uv_timer_init(&L.loop, &L.timer);
    L.t_start = fm_now_us();
    L.deadline_us = L.t_start + 60 * 1000000ull;
    for (int c = 0; c < NCONN; c++) {
        fm_aclient_t *ac;
        if (fm_aclient_connect(&L.loop, "127.0.0.1", s->rpc_port, on_connect, (void *)(intptr_t)c, &ac) != 0)
            L.errors++;
    }
    uv_timer_start(&L.timer, on_tick, 10, 10);
    uv_run(&L.loop, UV_RUN_DEFAULT);
    uv_loop_close(&L.loop);
}

/* Each connection's replies in send order, runs of one version collapsed:
 * must be exactly `pattern` (e.g. "010" for v1, v2, v1). */
static void check_switches(const char *pattern) {
    for (int c = 0; c < NCONN; c++) {
        char seen[64];
        int n = 0, missing = 0;
        for (uint32_t k = 0; k < L.next_seq[c] && k < MAXSEQ; k++) {
            int v = L.ver[c][k];
            if (v < 0) {
                missing++;
                continue;
            }
            if (n == 0 || seen[n - 1] != '0' + v) {
                if (n < 63)
                    seen[n++] = (char)('0' + v);
            }
        }
        seen[n] = '\0';
        FM_CHECK_STR(seen, pattern);
        /* Only the requests still in flight when the load stopped may lack a reply. */
        FM_CHECK(missing <= DEPTH);
    }
}

static void free_load(void) {
    for (int c = 0; c < NCONN; c++)
        free(L.ver[c]);
    for (int i = 0; i < L.nversions; i++)
        free(L.want[i]);
}

#define OPEN_DB(name, db, url)                             \
    do {                                                   \
        int rc_ = dbtest_open(name, &db, url, sizeof url); \
        if (rc_ == FM_EUNSUPPORTED)                        \
            FM_TEST_SKIP(fm_last_error());                 \
        FM_REQUIRE_OK(rc_);                                \
    } while (0)

static void test_promote_rollback_under_load(void) {
    FM_REQUIRE(fixture());
    fm_db_t *db;
    char url[512];
    OPEN_DB("follow_load", db, url);
    char *v1 = model(1), *v2 = model(2);
    FM_REQUIRE(fmctl(url, NULL, "models register '%s' --role stable", v1) == 0);
    FM_REQUIRE(fmctl(url, NULL, "models register '%s' --role canary", v2) == 0);
    fm_srv_t s;
    FM_REQUIRE_OK(start_server(&s, url));
    FM_CHECK(wait_field(&s, "connected", "true", 10000));
    FM_CHECK(wait_field(&s, "in_sync", "true", 10000));

    static const step_t steps[] = {{"models promote --reason load-test", "v2"},
                                   {"models rollback --reason load-test", "v1"}};
    static const char *const versions[] = {"v1", "v2"};
    run_load(&s, url, steps, 2, versions, 2);
    printf("    %llu replies: %llu from v1, %llu from v2; %llu errors, %llu wrong labels, %llu unknown versions\n",
           (unsigned long long)L.replies, (unsigned long long)L.by_version[0], (unsigned long long)L.by_version[1],
           (unsigned long long)L.errors, (unsigned long long)L.wrong_labels, (unsigned long long)L.unknown_version);
    FM_CHECK_EQ(L.step, 2);
    FM_CHECK_EQ(L.errors, 0);
    FM_CHECK_EQ(L.wrong_labels, 0);
    FM_CHECK_EQ(L.unknown_version, 0);
    check_switches("010"); /* v1 until the promote, v2 until the rollback, v1 after */
    free_load();

    FM_CHECK(fm_srv_log_contains(&s, "stable role: fashion-mnist-mlp v1 -> v2"));
    FM_CHECK(fm_srv_log_contains(&s, "stable role: fashion-mnist-mlp v2 -> v1"));
    FM_CHECK(wait_field(&s, "stable", "v1", 5000));
    FM_CHECK(wait_field(&s, "canary", "", 5000));
    FM_CHECK(wait_field(&s, "in_sync", "true", 5000));
    char n[64];
    registry_field(&s, "failed_swaps", n, sizeof n);
    FM_CHECK_STR(n, "0");
    FM_CHECK(metric(&s, "fm_registry_swaps{result=\"success\"}") >= 3); /* stable twice, canary removed */
    FM_CHECK_EQ((int)metric(&s, "fm_registry_swaps{result=\"failure\"}"), 0);
    FM_CHECK(metric(&s, "fm_registry_notifications ") >= 2);
    FM_CHECK_EQ((int)metric(&s, "fm_registry_connected "), 1);
    FM_CHECK_EQ(fm_srv_stop(&s, SIGTERM, 30000), 0);
    free(v1);
    free(v2);
    fm_db_close(db);
}

static void test_corrupt_promotion_refused(void) {
    FM_REQUIRE(fixture());
    fm_db_t *db;
    char url[512];
    OPEN_DB("follow_corrupt", db, url);
    char *v1 = model(1), *v3 = fm_test_path(fm_test_tmpdir(), "follow-v3"), *v4 = fm_test_path(fm_test_tmpdir(), "follow-v4");
    FM_REQUIRE_OK(regtest_write_model(v3, 0, 9, "v3", 0.8, NULL));
    FM_REQUIRE_OK(regtest_write_model(v4, 0, 13, "v4", 0.8, NULL));
    FM_REQUIRE(fmctl(url, NULL, "models register '%s' --role stable", v1) == 0);
    FM_REQUIRE(fmctl(url, NULL, "models register '%s'", v3) == 0);
    FM_REQUIRE(fmctl(url, NULL, "models register '%s'", v4) == 0);
    FM_REQUIRE_OK(regtest_corrupt(v3));
    /* v4's directory gets another valid model: loads fine, but it is not
     * the registered weights */
    FM_REQUIRE_OK(regtest_write_model(v4, 0, 77, "v4", 0.8, NULL));
    fm_srv_t s;
    FM_REQUIRE_OK(start_server(&s, url));
    FM_CHECK(wait_field(&s, "in_sync", "true", 10000));

    /* Under load, promote the corrupt v3 (--no-verify: the command would
     * refuse it itself), then roll back, then the replaced v4, then roll
     * back: v1 answers everything. */
    static const step_t steps[] = {{"models promote v3 --no-verify", "v1"},
                                   {"models rollback --no-verify", "v1"},
                                   {"models promote v4 --no-verify", "v1"},
                                   {"models rollback --no-verify", "v1"}};
    static const char *const versions[] = {"v1"};
    run_load(&s, url, steps, 4, versions, 1);
    printf("    %llu replies, all from v1: %llu; %llu errors\n", (unsigned long long)L.replies,
           (unsigned long long)L.by_version[0], (unsigned long long)L.errors);
    FM_CHECK_EQ(L.step, 4);
    FM_CHECK_EQ(L.errors, 0);
    FM_CHECK_EQ(L.wrong_labels, 0);
    FM_CHECK_EQ(L.unknown_version, 0);
    check_switches("0");
    free_load();
    FM_CHECK(fm_srv_log_contains(&s, "stable version v3"));
    FM_CHECK(fm_srv_log_contains(&s, "refused; v1 keeps serving"));
    FM_CHECK(fm_srv_log_contains(&s, "SHA-256")); /* v3: the loader's checksum refusal */
    FM_CHECK(fm_srv_log_contains(&s, "the registry recorded")); /* v4: valid files, other weights */
    FM_CHECK(metric(&s, "fm_registry_swaps{result=\"failure\"}") >= 2);
    char err[256];
    registry_field(&s, "last_error", err, sizeof err);
    FM_CHECK_CONTAINS(err, "v4 refused");
    /* rolled back to v1: the registry and the server agree again */
    FM_CHECK(wait_field(&s, "in_sync", "true", 5000));
    char served[64];
    served_version(&s, served, sizeof served);
    FM_CHECK_STR(served, "v1");

    /* A refused version stays refused while the registry assigns it: in_sync
     * is false and the old version serves. */
    FM_REQUIRE(fmctl(url, NULL, "models promote v3 --no-verify") == 0);
    FM_CHECK(wait_field(&s, "stable", "v3", 5000));
    FM_CHECK(wait_field(&s, "in_sync", "false", 5000));
    served_version(&s, served, sizeof served);
    FM_CHECK_STR(served, "v1");
    FM_CHECK_EQ(fm_srv_stop(&s, SIGTERM, 30000), 0);
    free(v1);
    free(v3);
    free(v4);
    fm_db_close(db);
}

static int exec_admin(const char *sql) {
    fm_db_t *admin;
    int rc = fm_db_connect(fm_pg_url(fm_pg_shared()), &admin);
    if (rc == 0) {
        rc = fm_db_exec(admin, sql);
        fm_db_close(admin);
    }
    if (rc)
        fprintf(stderr, "  %s: %s\n", sql, fm_last_error());
    return rc;
}

static void test_reconnect_and_resync(void) {
    FM_REQUIRE(fixture());
    fm_db_t *db;
    char url[512];
    OPEN_DB("follow_reconnect", db, url);
    char *v1 = model(1), *v2 = model(2);
    FM_REQUIRE(fmctl(url, NULL, "models register '%s' --role stable", v1) == 0);
    FM_REQUIRE(fmctl(url, NULL, "models register '%s'", v2) == 0);
    fm_srv_t s;
    FM_REQUIRE_OK(start_server(&s, url));
    FM_CHECK(wait_field(&s, "connected", "true", 10000));
    double notes_before = metric(&s, "fm_registry_notifications ");

    /* Cut the LISTEN connection and keep it from coming back, then change
     * the roles: the notification goes nowhere. */
    FM_REQUIRE_OK(exec_admin("ALTER DATABASE follow_reconnect ALLOW_CONNECTIONS false"));
    FM_REQUIRE_OK(exec_admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE application_name = 'fmserve-registry' AND datname = 'follow_reconnect'"));
    FM_CHECK(wait_field(&s, "connected", "false", 10000));
    FM_REQUIRE_OK(fm_db_exec(db, "SELECT fm_registry_promote('v2', 'stable', 'test', 'while disconnected')"));
    usleep(500000);
    char served[64];
    served_version(&s, served, sizeof served);
    FM_CHECK_STR(served, "v1"); /* still serving, still the old version */
    /* Connections allowed again: the follower reconnects, reads the roles
     * and swaps without any notification. */
    FM_REQUIRE_OK(exec_admin("ALTER DATABASE follow_reconnect ALLOW_CONNECTIONS true"));
    FM_CHECK(wait_field(&s, "connected", "true", 40000));
    FM_CHECK(wait_field(&s, "in_sync", "true", 10000));
    served_version(&s, served, sizeof served);
    FM_CHECK_STR(served, "v2");
    FM_CHECK(metric(&s, "fm_registry_reconnects ") >= 1);
    FM_CHECK_EQ(metric(&s, "fm_registry_notifications "), notes_before);
    FM_CHECK(fm_srv_log_contains(&s, "registry connection lost"));
    FM_CHECK(fm_srv_log_contains(&s, "reconnected"));

    /* The whole database server restarts: the same again, and serving
     * never stops. */
    fm_pg_t *pg = fm_pg_shared();
    FM_REQUIRE_OK(fm_pg_stop(pg));
    FM_CHECK(wait_field(&s, "connected", "false", 10000));
    served_version(&s, served, sizeof served);
    FM_CHECK_STR(served, "v2");
    FM_REQUIRE_OK(fm_pg_restart(pg));
    fm_db_close(db);
    FM_REQUIRE_OK(fm_db_connect(url, &db));
    FM_CHECK(wait_field(&s, "connected", "true", 40000));
    FM_CHECK(metric(&s, "fm_registry_reconnects ") >= 2);
    FM_REQUIRE(fmctl(url, NULL, "models rollback") == 0);
    FM_CHECK(wait_field(&s, "stable", "v1", 10000));
    FM_CHECK(wait_field(&s, "in_sync", "true", 10000));
    served_version(&s, served, sizeof served);
    FM_CHECK_STR(served, "v1");
    FM_CHECK_EQ(fm_srv_stop(&s, SIGTERM, 30000), 0);
    free(v1);
    free(v2);
    fm_db_close(db);
}

static void test_startup(void) {
    FM_REQUIRE(fixture());
    fm_db_t *db;
    char url[512];
    OPEN_DB("follow_startup", db, url);
    fm_srv_t s;
    /* no stable version in the registry */
    FM_CHECK(start_server(&s, url) != 0);
    FM_CHECK(fm_srv_log_contains(&s, "the model registry has no stable version"));
    /* registry mode needs a database */
    const char *nodb[] = {"--models-from", "registry", NULL};
    FM_CHECK(fm_srv_start(&s, nodb, NULL) != 0);
    FM_CHECK(fm_srv_log_contains(&s, "needs --database-url"));
    /* a corrupt stable stops the start; a corrupt canary does not */
    char *bad = fm_test_path(fm_test_tmpdir(), "follow-bad");
    FM_REQUIRE_OK(regtest_write_model(bad, 0, 3, "v5", 0.8, NULL));
    char *v1 = model(1);
    FM_REQUIRE(fmctl(url, NULL, "models register '%s' --role stable", bad) == 0);
    FM_REQUIRE_OK(regtest_corrupt(bad));
    FM_CHECK(start_server(&s, url) != 0);
    FM_CHECK(fm_srv_log_contains(&s, "cannot start: model registry"));
    FM_CHECK(fm_srv_log_contains(&s, "follow-bad"));
    FM_REQUIRE(fmctl(url, NULL, "models register '%s'", v1) == 0);
    FM_REQUIRE(fmctl(url, NULL, "models promote v1") == 0);
    FM_REQUIRE(fmctl(url, NULL, "models promote v5 --role canary --no-verify") == 0);
    FM_REQUIRE_OK(start_server(&s, url));
    FM_CHECK(fm_srv_log_contains(&s, "starting without a canary"));
    FM_CHECK(wait_field(&s, "stable", "v1", 5000));
    FM_CHECK(wait_field(&s, "canary", "v5", 5000));
    FM_CHECK(wait_field(&s, "in_sync", "false", 5000));
    /* archiving the bad canary brings server and registry into agreement */
    FM_REQUIRE(fmctl(url, NULL, "models archive v5") == 0);
    FM_CHECK(wait_field(&s, "in_sync", "true", 5000));
    /* SIGHUP in registry mode reloads settings, never the configured directories */
    kill(s.pid, SIGHUP);
    for (int i = 0; i < 100 && !fm_srv_log_contains(&s, "models follow the registry"); i++)
        usleep(20000);
    FM_CHECK(fm_srv_log_contains(&s, "models follow the registry"));
    char served[64];
    served_version(&s, served, sizeof served);
    FM_CHECK_STR(served, "v1");
    FM_CHECK_EQ(fm_srv_stop(&s, SIGTERM, 30000), 0);
    free(bad);
    free(v1);
    fm_db_close(db);
}

FM_TEST_MAIN({"promote_rollback_under_load", test_promote_rollback_under_load},
             {"corrupt_promotion_refused", test_corrupt_promotion_refused},
             {"reconnect_and_resync", test_reconnect_and_resync}, {"startup", test_startup})
