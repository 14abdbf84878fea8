/* bench_writer.c: the prediction log under load. Starts fmserve itself (a
 * random MLP by default), drives it with closed-loop pipelined clients, and
 * reads the writer's counters from /metrics:
 *   no-log    the same load without a database (the serving baseline);
 *   logging   every prediction logged (5 % of images sampled): images/s
 *             served, rows/s committed to PostgreSQL, whether the writer
 *             kept up (spooled, dropped, lag after the load stops);
 *   catch-up  (with --pg-stop/--pg-start) PostgreSQL stopped for a while
 *             under load, then started: the rows/s the writer commits while
 *             it replays the spool and serving goes on, i.e. its capacity
 *             while serving; then every served row must be in the table
 *             exactly once (checked with SQL through --database-url).
 * fmserve, the clients and PostgreSQL share the machine. Results are
 * printed with the machine, date and commit, and as JSON with --json;
 * benchmarks/bench_writer.sh runs it against a throwaway PostgreSQL. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "bench_machine.h"
#include "fm_aclient.h"
#include "fm_db.h"
#include "fm_error.h"
#include "fm_idx.h"
#include "fm_model.h"
#include "fm_time.h"

#ifndef FMSERVE_BIN
#define FMSERVE_BIN "fmserve"
#endif
#ifndef FM_SOURCE_DIR
#define FM_SOURCE_DIR "."
#endif

typedef struct options {
    const char *url, *model, *fmserve, *json, *pg_stop, *pg_start, *spool;
    double seconds, warmup, outage;
    double rate, catchup_rate; /* offered images/s of the logging run and of the catch-up (0 = closed loop) */
    int connections, depth, batch, workers;
    const char *sample_rate;
} options_t;

/* ---- fmserve ----------------------------------------------------------------- */

typedef struct server {
    pid_t pid;
    int port, http_port;
    char ports[300], log[300];
} server_t;

static int server_start(server_t *s, const options_t *o, int logging, const char *tmp) {
    static int n;
    memset(s, 0, sizeof *s);
    n++;
    snprintf(s->ports, sizeof s->ports, "%s/ports-%d", tmp, n);
    snprintf(s->log, sizeof s->log, "%s/fmserve-%d.log", tmp, n);
    char workers[16];
    snprintf(workers, sizeof workers, "%d", o->workers);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(s->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        unsetenv("FM_DATABASE_URL");
        if (logging) {
            setenv("FM_DATABASE_URL", o->url, 1);
            /* Each server its own spool: one run's leftovers must not be
             * replayed into the next one's count. */
            char spool[400];
            snprintf(spool, sizeof spool, "%s-%d", o->spool, n);
            setenv("FM_SPOOL_DIR", spool, 1);
            setenv("FM_SAMPLE_RATE", o->sample_rate, 1);
        }
        execl(o->fmserve, o->fmserve, "--listen", "127.0.0.1", "--port", "0", "--http-port", "0", "--ports-file",
              s->ports, "--stable-model", o->model, "--canary-model", "", "--cpu-workers", workers, "--backend", "cpu",
              (char *)NULL);
        _exit(127);
    }
    if (pid < 0)
        return -1;
    s->pid = pid;
    for (int i = 0; i < 3000; i++) {
        FILE *f = fopen(s->ports, "r");
        if (f) {
            int ok = fscanf(f, "%d %d", &s->port, &s->http_port) == 2;
            fclose(f);
            if (ok)
                return 0;
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            fprintf(stderr, "bench_writer: fmserve exited at start; see %s\n", s->log);
            return -1;
        }
        usleep(20000);
    }
    kill(pid, SIGKILL);
    return -1;
}

static int server_stop(server_t *s) {
    kill(s->pid, SIGTERM);
    int st = 0;
    waitpid(s->pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* /metrics, as text (malloc'd). */
static char *metrics(const server_t *s) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->http_port)};
    a.sin_addr.s_addr = htonl(0x7f000001);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    const char *req = "GET /metrics HTTP/1.0\r\n\r\n";
    if (write(fd, req, strlen(req)) != (ssize_t)strlen(req)) {
        close(fd);
        return NULL;
    }
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    ssize_t r;
    while (buf && len + 1 < cap && (r = read(fd, buf + len, cap - len - 1)) > 0)
        len += (size_t)r;
    close(fd);
    if (buf)
        buf[len] = '\0';
    return buf;
}

/* Sum of the series whose line starts with `prefix`; -1 when none. */
static double series(const char *text, const char *prefix) {
    double sum = 0;
    int found = 0;
    size_t pl = strlen(prefix);
    for (const char *line = text; line && *line;) {
        const char *nl = strchr(line, '\n');
        if (strncmp(line, prefix, pl) == 0) {
            const char *sp = strrchr(line, ' ');
            if (nl && sp > nl) /* strrchr went past this line */
                for (sp = nl; sp > line && *sp != ' '; sp--)
                    ;
            sum += strtod(sp + 1, NULL);
            found = 1;
        }
        line = nl ? nl + 1 : NULL;
    }
    return found ? sum : -1;
}

static double metric(const server_t *s, const char *prefix) {
    char *m = metrics(s);
    double v = m ? series(m, prefix) : -1;
    free(m);
    return v;
}

#define WRITTEN "fm_log_rows_written{kind=\"prediction\"} "

/* ---- Closed-loop load -------------------------------------------------------- */

typedef struct load load_t;
typedef struct conn {
    load_t *load;
    fm_aclient_t *c;
    size_t next;
} conn_t;

struct load {
    uv_loop_t loop;
    uv_timer_t timer;
    const fm_dataset_t *ds;
    int batch, depth, nconn, closed, stopping;
    double rate;       /* images/s to offer; 0 = closed loop */
    uint64_t start_us, sent_images;
    int turn;
    conn_t *conns;
    uint64_t images, requests, errors;
    double *lat;
    size_t nlat, cap;
    uint64_t end_us;
};

static void send_one(conn_t *cn);

static void on_reply(fm_aclient_t *c, int status, const fm_mp_obj_t *error, const fm_mp_obj_t *result,
                     uint64_t latency_us, void *user) {
    conn_t *cn = user;
    load_t *L = cn->load;
    (void)c;
    if (status != 0)
        return;
    if (error) {
        L->errors++;
    } else {
        L->requests++;
        L->images += fm_mp_len(fm_mp_map_get(result, "predictions"));
        if (L->nlat < L->cap)
            L->lat[L->nlat++] = (double)latency_us;
    }
    if (!L->stopping) {
        if (L->rate <= 0)
            send_one(cn);
    } else if (fm_aclient_inflight(cn->c) == 0) {
        fm_aclient_close(cn->c, NULL, NULL);
        cn->c = NULL;
        if (++L->closed == L->nconn)
            uv_close((uv_handle_t *)&L->timer, NULL);
    }
}

static void send_one(conn_t *cn) {
    load_t *L = cn->load;
    size_t first = cn->next;
    if (first + (size_t)L->batch > L->ds->n)
        first = 0;
    cn->next = first + (size_t)L->batch;
    L->sent_images += (uint64_t)L->batch;
    fm_aclient_predict(cn->c, L->ds->images + first * 784, (size_t)L->batch, NULL, on_reply, cn);
}

static void on_connect(fm_aclient_t *c, int status, void *user) {
    conn_t *cn = user;
    if (status != 0) {
        fprintf(stderr, "bench_writer: connect: %s\n", fm_last_error());
        exit(1);
    }
    cn->c = c;
    if (cn->load->rate > 0)
        return; /* the timer paces the requests */
    for (int i = 0; i < cn->load->depth; i++)
        send_one(cn);
}

static void on_tick(uv_timer_t *t) {
    load_t *L = t->data;
    uint64_t now = fm_now_us();
    if (now >= L->end_us) {
        L->stopping = 1;
        /* Connections with nothing in flight close now (the others after
         * their last reply). */
        for (int i = 0; i < L->nconn; i++) {
            conn_t *cn = &L->conns[i];
            if (cn->c && fm_aclient_inflight(cn->c) == 0) {
                fm_aclient_close(cn->c, NULL, NULL);
                cn->c = NULL;
                if (++L->closed == L->nconn)
                    uv_close((uv_handle_t *)&L->timer, NULL);
            }
        }
        return;
    }
    if (L->rate <= 0)
        return;
    /* Open loop: send what the rate says is due, spread over the
     * connections, up to `depth` in flight on each (beyond that the server
     * is saturated and the offered rate is not met, which shows). */
    uint64_t due = (uint64_t)(L->rate * (double)(now - L->start_us) / 1e6);
    for (int guard = 0; L->sent_images < due && guard < 4 * L->nconn; guard++) {
        conn_t *cn = &L->conns[L->turn++ % L->nconn];
        if (cn->c && fm_aclient_inflight(cn->c) < (size_t)L->depth)
            send_one(cn);
    }
}

typedef struct run {
    char name[16];
    double seconds, images_per_s, lat_p50, lat_p99;
    uint64_t images, errors;
    /* Writer counters over the run (logging runs). */
    double written_per_s, spooled, dropped, lag_s, buffer_rows_max, replayed;
    double rows_served, rows_in_table, rows_distinct; /* catch-up: the exactly-once check */
} run_t;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Runs the load for `seconds` (after `warmup`, not measured). */
static int load_for_rate(const server_t *s, const options_t *o, const fm_dataset_t *ds, double seconds, double rate,
                         run_t *r) {
    for (int pass = 0; pass < 2; pass++) {
        double dur = pass == 0 ? o->warmup : seconds;
        if (dur <= 0)
            continue;
        load_t L;
        memset(&L, 0, sizeof L);
        uv_loop_init(&L.loop);
        L.ds = ds;
        L.batch = o->batch;
        L.depth = o->depth;
        L.nconn = o->connections;
        L.cap = 4000000;
        L.lat = pass ? malloc(L.cap * sizeof *L.lat) : NULL;
        if (!pass)
            L.cap = 0;
        L.conns = calloc((size_t)L.nconn, sizeof *L.conns);
        L.rate = rate;
        L.depth = rate > 0 ? 64 : o->depth;
        uint64_t t0 = fm_now_us();
        L.start_us = t0;
        L.end_us = t0 + (uint64_t)(dur * 1e6);
        uv_timer_init(&L.loop, &L.timer);
        L.timer.data = &L;
        uv_timer_start(&L.timer, on_tick, 1, 1);
        for (int i = 0; i < L.nconn; i++) {
            L.conns[i].load = &L;
            L.conns[i].next = (size_t)i * 97 % ds->n;
            fm_aclient_t *c;
            if (fm_aclient_connect(&L.loop, "127.0.0.1", s->port, on_connect, &L.conns[i], &c) != 0) {
                fprintf(stderr, "bench_writer: %s\n", fm_last_error());
                return -1;
            }
        }
        uv_run(&L.loop, UV_RUN_DEFAULT);
        uint64_t t1 = fm_now_us();
        uv_loop_close(&L.loop);
        if (pass) {
            r->seconds = (double)(t1 - t0) / 1e6;
            r->images = L.images;
            r->errors = L.errors;
            r->images_per_s = (double)L.images / r->seconds;
            qsort(L.lat, L.nlat, sizeof *L.lat, cmp_double);
            r->lat_p50 = L.nlat ? L.lat[(size_t)(0.5 * (double)(L.nlat - 1))] : 0;
            r->lat_p99 = L.nlat ? L.lat[(size_t)(0.99 * (double)(L.nlat - 1))] : 0;
        }
        free(L.lat);
        free(L.conns);
    }
    return 0;
}

static int load_for(const server_t *s, const options_t *o, const fm_dataset_t *ds, double seconds, run_t *r) {
    return load_for_rate(s, o, ds, seconds, 0, r);
}

/* Load in a child process, so that this one can watch /metrics meanwhile. */
typedef struct bg {
    pid_t pid;
    int fd; /* the child's result */
} bg_t;

static int load_start(bg_t *b, const server_t *s, const options_t *o, const fm_dataset_t *ds, double seconds,
                      double rate) {
    int p[2];
    if (pipe(p) != 0)
        return -1;
    fflush(NULL);
    b->pid = fork();
    if (b->pid == 0) {
        close(p[0]);
        options_t oo = *o;
        oo.warmup = 0;
        run_t r = {0};
        int rc = load_for_rate(s, &oo, ds, seconds, rate, &r);
        ssize_t w = write(p[1], &r, sizeof r);
        _exit(rc == 0 && w == (ssize_t)sizeof r ? 0 : 1);
    }
    close(p[1]);
    b->fd = p[0];
    return b->pid > 0 ? 0 : -1;
}

static int load_wait(bg_t *b, run_t *r) {
    run_t got;
    ssize_t n = read(b->fd, &got, sizeof got);
    close(b->fd);
    int st = 0;
    waitpid(b->pid, &st, 0);
    if (n != (ssize_t)sizeof got)
        return -1;
    r->seconds = got.seconds;
    r->images = got.images;
    r->errors = got.errors;
    r->images_per_s = got.images_per_s;
    r->lat_p50 = got.lat_p50;
    r->lat_p99 = got.lat_p99;
    return 0;
}

/* ---- Runs -------------------------------------------------------------------- */

static int run_plain(const options_t *o, const fm_dataset_t *ds, const char *tmp, run_t *r) {
    server_t s;
    snprintf(r->name, sizeof r->name, "no-log");
    if (server_start(&s, o, 0, tmp) != 0)
        return -1;
    int rc = load_for(&s, o, ds, o->seconds, r);
    server_stop(&s);
    return rc;
}

static int run_logging(const options_t *o, const fm_dataset_t *ds, const char *tmp, run_t *r) {
    server_t s;
    snprintf(r->name, sizeof r->name, "logging");
    if (server_start(&s, o, 1, tmp) != 0)
        return -1;
    /* Warm-up, then the measured load in a child while this process
     * samples the writer's counters. */
    options_t w = *o;
    run_t dummy;
    if (load_for(&s, &w, ds, 0, &dummy) != 0) {
        server_stop(&s);
        return -1;
    }
    double written0 = metric(&s, WRITTEN), spooled0 = metric(&s, "fm_log_rows_spooled{kind=\"prediction\"} ");
    double dropped0 = metric(&s, "fm_log_rows_dropped{kind=\"prediction\"");
    uint64_t t0 = fm_now_us();
    bg_t b;
    if (load_start(&b, &s, o, ds, o->seconds, o->rate) != 0) {
        server_stop(&s);
        return -1;
    }
    double maxbuf = 0;
    while (fm_now_us() - t0 < (uint64_t)(o->seconds * 1e6)) {
        double v = metric(&s, "fm_log_buffer_rows ");
        if (v > maxbuf)
            maxbuf = v;
        usleep(100000);
    }
    load_wait(&b, r);
    uint64_t t1 = fm_now_us();
    double written1 = metric(&s, WRITTEN);
    r->written_per_s = (written1 - written0) / ((double)(t1 - t0) / 1e6);
    /* Lag: how long after the load stops the log has every row. */
    double served = metric(&s, "fm_inference_count{");
    while (metric(&s, WRITTEN) + metric(&s, "fm_log_rows_spooled{kind=\"prediction\"} ") +
               metric(&s, "fm_log_rows_dropped{kind=\"prediction\"") <
               served &&
           fm_now_us() - t1 < 120000000)
        usleep(20000);
    r->lag_s = (double)(fm_now_us() - t1) / 1e6;
    r->spooled = metric(&s, "fm_log_rows_spooled{kind=\"prediction\"} ") - spooled0;
    r->dropped = metric(&s, "fm_log_rows_dropped{kind=\"prediction\"") - dropped0;
    r->buffer_rows_max = maxbuf;
    int code = server_stop(&s);
    return code == 0 ? 0 : -1;
}

static int sh(const char *cmd) {
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Rows in the table: all of them, and distinct keys. */
static int table_rows(const char *url, double *n, double *distinct) {
    fm_db_t *db;
    if (fm_db_connect(url, &db) != 0)
        return -1;
    fm_db_result_t *res;
    int rc = fm_db_query(db, "SELECT count(*), count(DISTINCT (request_id, image_index)) FROM predictions", 0, NULL,
                         &res);
    if (rc == 0) {
        int64_t a = 0, b = 0;
        fm_db_result_int64(res, 0, 0, &a);
        fm_db_result_int64(res, 0, 1, &b);
        *n = (double)a;
        *distinct = (double)b;
        fm_db_result_free(res);
    }
    fm_db_close(db);
    return rc;
}

static int run_catchup(const options_t *o, const fm_dataset_t *ds, const char *tmp, run_t *r) {
    server_t s;
    snprintf(r->name, sizeof r->name, "catch-up");
    double before = 0, before_distinct = 0;
    if (table_rows(o->url, &before, &before_distinct) != 0) {
        fprintf(stderr, "bench_writer: %s\n", fm_last_error());
        return -1;
    }
    if (server_start(&s, o, 1, tmp) != 0)
        return -1;
    run_t dummy;
    load_for(&s, o, ds, 0, &dummy); /* warm-up */
    if (sh(o->pg_stop) != 0) {
        fprintf(stderr, "bench_writer: --pg-stop failed\n");
        server_stop(&s);
        return -1;
    }
    /* The outage: serving goes on, the writer spools. */
    options_t q = *o;
    q.warmup = 0;
    if (load_for(&s, &q, ds, o->outage, &dummy) != 0 || sh(o->pg_start) != 0) {
        fprintf(stderr, "bench_writer: the outage run or --pg-start failed\n");
        server_stop(&s);
        return -1;
    }
    double spooled = metric(&s, "fm_log_rows_spooled{kind=\"prediction\"} ");
    /* PostgreSQL is back: load goes on while the writer catches up; measure
     * from its reconnection to an empty spool. */
    bg_t b;
    double budget = o->seconds * 6 + o->outage * 4;
    if (load_start(&b, &s, o, ds, budget, o->catchup_rate) != 0) {
        server_stop(&s);
        return -1;
    }
    uint64_t t0 = 0, t1 = 0, limit = fm_now_us() + (uint64_t)(budget * 1e6);
    double w0 = 0, w1 = 0;
    while (fm_now_us() < limit) {
        double up = metric(&s, "fm_log_database_connected ");
        double written = metric(&s, WRITTEN);
        double spool = metric(&s, "fm_log_spool_bytes ");
        if (!t0 && up == 1) {
            t0 = fm_now_us();
            w0 = written;
        }
        if (t0 && spool == 0) {
            t1 = fm_now_us();
            w1 = written;
            break;
        }
        usleep(50000);
    }
    kill(b.pid, SIGTERM); /* the load child: it is done measuring */
    int st;
    waitpid(b.pid, &st, 0);
    close(b.fd);
    r->replayed = metric(&s, "fm_log_rows_replayed{kind=\"prediction\"} ");
    r->spooled = spooled;
    r->dropped = metric(&s, "fm_log_rows_dropped{kind=\"prediction\"");
    double served = metric(&s, "fm_inference_count{");
    int code = server_stop(&s);
    if (!t1) {
        fprintf(stderr, "bench_writer: the spool did not empty within %.0f s\n", budget);
        return -1;
    }
    r->seconds = (double)(t1 - t0) / 1e6;
    r->written_per_s = (w1 - w0) / r->seconds;
    /* Every image served is in the table exactly once (the server flushed
     * at its exit). */
    double after = 0, after_distinct = 0;
    table_rows(o->url, &after, &after_distinct);
    r->rows_served = served;
    r->rows_in_table = after - before;
    r->rows_distinct = after_distinct - before_distinct;
    if (r->rows_in_table != served || r->rows_distinct != r->rows_in_table) {
        fprintf(stderr, "bench_writer: %.0f images served, %.0f rows in the table, %.0f distinct\n", served,
                r->rows_in_table, r->rows_distinct);
        return -1;
    }
    return code == 0 ? 0 : -1;
}

/* ---- Main -------------------------------------------------------------------- */

static int make_random_model(const char *dir) {
    fm_model_t *m = fm_model_new(FM_ARCH_MLP);
    uint64_t s = 42;
    for (int p = 0; p < fm_model_param_count(m); p++) {
        fm_tensor_t *t = fm_model_param_mut(m, p);
        for (size_t i = 0; i < t->numel; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            t->data[i] = (float)((double)(s >> 40) / 16777216.0 - 0.5) * 0.1f;
        }
    }
    fm_model_set_identity(m, "bench-mlp", "v1");
    int rc = fm_model_save(m, dir);
    fm_model_free(m);
    return rc;
}

static void usage(FILE *f) {
    fprintf(f, "usage: bench_writer --database-url URL [--pg-stop CMD --pg-start CMD] [--seconds S] [--warmup S]\n"
               "                    [--rate R] [--catchup-rate R] [--outage S] [--connections N] [--depth D]\n"
               "                    [--batch B] [--cpu-workers W]\n"
               "                    [--sample-rate R] [--model DIR] [--fmserve PATH] [--json FILE]\n"
               "  --database-url URL  a migrated database (every run's rows are counted there; use a fresh one)\n"
               "  --pg-stop/--pg-start shell commands that stop and start that PostgreSQL (the catch-up run)\n"
               "  --seconds S         measuring time of the no-log and logging runs (default 10)\n"
               "  --outage S          how long PostgreSQL is down in the catch-up run (default 10)\n"
               "  --rate R            images/s offered in the logging run (default 100000; 0 = as fast as the\n"
               "                      server answers, closed loop)\n"
               "  --catchup-rate R    images/s offered while the writer catches up (default 30000)\n"
               "  --connections N, --depth D, --batch B   load: connections, requests in flight each, images\n"
               "                      per request (default 4, 8, 16)\n"
               "  --sample-rate R     FM_SAMPLE_RATE of the logging server (default 0.05)\n");
}

int main(int argc, char **argv) {
    options_t o = {.fmserve = FMSERVE_BIN, .seconds = 10, .warmup = 2, .outage = 10, .connections = 4,
                   .depth = 8, .batch = 16, .sample_rate = "0.05", .rate = 100000, .catchup_rate = 30000};
    static const struct option longopts[] = {
        {"database-url", required_argument, 0, 'u'}, {"pg-stop", required_argument, 0, 'x'},
        {"pg-start", required_argument, 0, 'y'},     {"seconds", required_argument, 0, 's'},
        {"warmup", required_argument, 0, 'w'},       {"outage", required_argument, 0, 'O'},
        {"connections", required_argument, 0, 'c'},  {"depth", required_argument, 0, 'd'},
        {"batch", required_argument, 0, 'b'},        {"cpu-workers", required_argument, 0, 'W'},
        {"sample-rate", required_argument, 0, 'r'},  {"model", required_argument, 0, 'm'},
        {"rate", required_argument, 0, 'R'},         {"catchup-rate", required_argument, 0, 'C'},
        {"fmserve", required_argument, 0, 'f'},      {"json", required_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},               {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 'u': o.url = optarg; break;
        case 'x': o.pg_stop = optarg; break;
        case 'y': o.pg_start = optarg; break;
        case 's': o.seconds = atof(optarg); break;
        case 'w': o.warmup = atof(optarg); break;
        case 'O': o.outage = atof(optarg); break;
        case 'c': o.connections = atoi(optarg); break;
        case 'd': o.depth = atoi(optarg); break;
        case 'b': o.batch = atoi(optarg); break;
        case 'W': o.workers = atoi(optarg); break;
        case 'r': o.sample_rate = optarg; break;
        case 'm': o.model = optarg; break;
        case 'R': o.rate = atof(optarg); break;
        case 'C': o.catchup_rate = atof(optarg); break;
        case 'f': o.fmserve = optarg; break;
        case 'j': o.json = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!o.url || o.seconds <= 0 || o.connections < 1 || o.depth < 1 || o.batch < 1 || o.batch > 4096) {
        usage(stderr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    char tmp[] = "/tmp/bench_writer-XXXXXX";
    if (!mkdtemp(tmp))
        return 1;
    char model[400], spool[400];
    snprintf(spool, sizeof spool, "%s/spool", tmp);
    o.spool = spool;
    if (!o.model) {
        snprintf(model, sizeof model, "%s/random-mlp", tmp);
        if (make_random_model(model) != 0) {
            fprintf(stderr, "bench_writer: %s\n", fm_last_error());
            return 1;
        }
        o.model = model;
    }
    fm_dataset_t ds;
    if (fm_dataset_load(FM_SOURCE_DIR "/tests/fixtures/fashion-mnist", "t10k", &ds) != 0) {
        fprintf(stderr, "bench_writer: %s\n", fm_last_error());
        return 1;
    }
    struct utsname u;
    uname(&u);
    char cpu[128], commit[128];
    bench_cpu_model(cpu, sizeof cpu);
    bench_commit(commit, sizeof commit);
    time_t now = time(NULL);
    char date[32];
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    printf("bench_writer: %s, %ld cores, %s %s; %s; commit %s\n", cpu, cores, u.sysname, u.release, date,
           commit);
    printf("load: %d connections, %d images per request; no-log: closed loop, %d in flight per connection; "
           "logging: %.0f images/s offered%s; catch-up: %.0f images/s offered; fmserve, clients and PostgreSQL on "
           "this machine (the figures are indicative)\n\n",
           o.connections, o.batch, o.depth, o.rate, o.rate > 0 ? "" : " (closed loop)", o.catchup_rate);
    run_t runs[3];
    memset(runs, 0, sizeof runs);
    int nruns = 0, rc = 0;
    if (run_plain(&o, &ds, tmp, &runs[nruns]) == 0)
        nruns++;
    else
        rc = 1;
    if (run_logging(&o, &ds, tmp, &runs[nruns]) == 0)
        nruns++;
    else
        rc = 1;
    int catchup = o.pg_stop && o.pg_start;
    if (catchup) {
        if (run_catchup(&o, &ds, tmp, &runs[nruns]) == 0)
            nruns++;
        else
            rc = 1;
    }
    printf("%-9s %8s %11s %9s %9s %12s %9s %9s %8s\n", "run", "seconds", "images/s", "p50 us", "p99 us",
           "log rows/s", "spooled", "dropped", "lag s");
    for (int i = 0; i < nruns; i++) {
        const run_t *r = &runs[i];
        if (strcmp(r->name, "catch-up") == 0)
            printf("%-9s %8.1f %11s %9s %9s %12.0f %9.0f %9.0f %8s\n", r->name, r->seconds, "-", "-", "-",
                   r->written_per_s, r->spooled, r->dropped, "-");
        else
            printf("%-9s %8.1f %11.0f %9.0f %9.0f %12.0f %9.0f %9.0f %8.2f\n", r->name, r->seconds, r->images_per_s,
                   r->lat_p50, r->lat_p99, r->written_per_s, r->spooled, r->dropped, r->lag_s);
    }
    const run_t *lg = nruns > 1 ? &runs[1] : NULL, *cu = catchup && nruns > 2 ? &runs[2] : NULL;
    if (cu)
        printf("\ncatch-up: %.0f rows spooled during a %.0f s outage, replayed with live traffic in %.1f s: %.0f rows/s "
               "committed; %.0f images served, %.0f rows in the table (%.0f distinct), %.0f dropped\n",
               cu->spooled, o.outage, cu->seconds, cu->written_per_s, cu->rows_served, cu->rows_in_table,
               cu->rows_distinct, cu->dropped);
    double best = 0;
    if (lg && lg->written_per_s > best)
        best = lg->written_per_s;
    if (cu && cu->written_per_s > best)
        best = cu->written_per_s;
    printf("goal: >= 100000 prediction rows/s into PostgreSQL while serving: %s (%.0f rows/s)\n",
           best >= 100000 ? "met" : "not met", best);
    if (o.json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "benchmark", "writer");
        cJSON_AddStringToObject(j, "date", date);
        cJSON_AddStringToObject(j, "commit", commit);
        cJSON *m = cJSON_AddObjectToObject(j, "machine");
        cJSON_AddStringToObject(m, "cpu", cpu);
        cJSON_AddNumberToObject(m, "cores", (double)cores);
        char k[300];
        snprintf(k, sizeof k, "%s %s", u.sysname, u.release);
        cJSON_AddStringToObject(m, "kernel", k);
        cJSON_AddNumberToObject(j, "connections", o.connections);
        cJSON_AddNumberToObject(j, "depth", o.depth);
        cJSON_AddNumberToObject(j, "images_per_request", o.batch);
        cJSON_AddStringToObject(j, "sample_rate", o.sample_rate);
        cJSON_AddNumberToObject(j, "logging_offered_images_per_s", o.rate);
        cJSON_AddNumberToObject(j, "catchup_offered_images_per_s", o.catchup_rate);
        cJSON_AddNumberToObject(j, "outage_s", o.outage);
        cJSON *arr = cJSON_AddArrayToObject(j, "runs");
        for (int i = 0; i < nruns; i++) {
            const run_t *r = &runs[i];
            cJSON *x = cJSON_CreateObject();
            cJSON_AddStringToObject(x, "run", r->name);
            cJSON_AddNumberToObject(x, "seconds", r->seconds);
            cJSON_AddNumberToObject(x, "images_per_s", r->images_per_s);
            cJSON_AddNumberToObject(x, "latency_p50_us", r->lat_p50);
            cJSON_AddNumberToObject(x, "latency_p99_us", r->lat_p99);
            cJSON_AddNumberToObject(x, "log_rows_per_s", r->written_per_s);
            cJSON_AddNumberToObject(x, "spooled", r->spooled);
            cJSON_AddNumberToObject(x, "dropped", r->dropped);
            cJSON_AddNumberToObject(x, "replayed", r->replayed);
            cJSON_AddNumberToObject(x, "buffer_rows_max", r->buffer_rows_max);
            if (strcmp(r->name, "catch-up") == 0) {
                cJSON_AddNumberToObject(x, "rows_served", r->rows_served);
                cJSON_AddNumberToObject(x, "rows_in_table", r->rows_in_table);
                cJSON_AddNumberToObject(x, "rows_distinct", r->rows_distinct);
            } else {
                cJSON_AddNumberToObject(x, "lag_s", r->lag_s);
            }
            cJSON_AddItemToArray(arr, x);
        }
        cJSON_AddNumberToObject(j, "best_log_rows_per_s", best);
        char *text = cJSON_Print(j);
        FILE *f = fopen(o.json, "w");
        if (f) {
            fputs(text, f);
            fputc('\n', f);
            fclose(f);
        }
        free(text);
        cJSON_Delete(j);
    }
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (sh(cmd) != 0)
        fprintf(stderr, "bench_writer: could not remove %s\n", tmp);
    return rc;
}
