/* fmb_report.c: what fmbench writes: the terminal table, the JSON and CSV
 * records (machine, date, commit, server description, every step), and the
 * latency-against-throughput plot drawn by gnuplot. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fm_error.h"
#include "fm_msgpack.h"
#include "fm_build_commit.h" /* FM_BUILD_COMMIT, generated at every build */
#include "fmb.h"


const char *fmb_commit(const fmb_options_t *o) { return o->commit ? o->commit : FM_BUILD_COMMIT; }

void fmb_step_label(const fmb_step_t *s, char *buf, size_t cap) {
    if (s->mode == FMB_CLOSED)
        snprintf(buf, cap, "closed c=%d", s->concurrency);
    else if (s->target_rps > 0)
        snprintf(buf, cap, "%s %.5g/s", s->arrivals == FM_ARRIVALS_POISSON ? "poisson" : "constant", s->target_rps);
    else
        snprintf(buf, cap, "%s %g x peak", s->arrivals == FM_ARRIVALS_POISSON ? "poisson" : "constant",
                 s->rate_fraction);
}

/* ---- msgpack to JSON ------------------------------------------------------------ */

static cJSON *mp_to_json(const fm_mp_obj_t *o, int depth) {
    if (depth > 16)
        return cJSON_CreateString("(too deep)");
    switch (fm_mp_type(o)) {
    case FM_MP_NIL: return cJSON_CreateNull();
    case FM_MP_BOOL: {
        int b = 0;
        fm_mp_get_bool(o, &b);
        return cJSON_CreateBool(b);
    }
    case FM_MP_UINT:
    case FM_MP_INT:
    case FM_MP_FLOAT: {
        double d = 0;
        fm_mp_get_double(o, &d);
        return cJSON_CreateNumber(d);
    }
    case FM_MP_STR: {
        size_t n;
        const char *s = fm_mp_get_str(o, &n);
        char *t = malloc(n + 1);
        if (!t)
            return NULL;
        memcpy(t, s, n);
        t[n] = '\0';
        cJSON *j = cJSON_CreateString(t);
        free(t);
        return j;
    }
    case FM_MP_BIN: {
        size_t n;
        fm_mp_get_bin(o, &n);
        char t[64];
        snprintf(t, sizeof t, "(%zu bytes)", n);
        return cJSON_CreateString(t);
    }
    case FM_MP_ARRAY: {
        cJSON *a = cJSON_CreateArray();
        for (uint32_t i = 0; a && i < fm_mp_len(o); i++)
            cJSON_AddItemToArray(a, mp_to_json(fm_mp_at(o, i), depth + 1));
        return a;
    }
    case FM_MP_MAP: {
        cJSON *m = cJSON_CreateObject();
        for (uint32_t i = 0; m && i < fm_mp_len(o); i++) {
            char key[128];
            if (fm_mp_copy_str(fm_mp_key_at(o, i), key, sizeof key) != 0)
                snprintf(key, sizeof key, "key%u", i);
            cJSON_AddItemToObject(m, key, mp_to_json(fm_mp_val_at(o, i), depth + 1));
        }
        return m;
    }
    default: return cJSON_CreateString("(ext)");
    }
}

char *fmb_mp_to_json_text(const fm_mp_obj_t *o) {
    cJSON *j = mp_to_json(o, 0);
    char *t = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (!t)
        fm_fail(FM_ENOMEM, "JSON of a server reply");
    return t;
}

/* ---- The machine ---------------------------------------------------------------- */

typedef struct machine {
    char host[256], cpu[256], kernel[256];
    long cores;
    double mem_gib;
} machine_t;

static void machine_info(machine_t *m) {
    memset(m, 0, sizeof *m);
    if (gethostname(m->host, sizeof m->host - 1) != 0)
        snprintf(m->host, sizeof m->host, "?");
    snprintf(m->cpu, sizeof m->cpu, "?");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "model name", 10)) {
                char *p = strchr(line, ':');
                snprintf(m->cpu, sizeof m->cpu, "%.250s", p ? p + 2 : line);
                m->cpu[strcspn(m->cpu, "\n")] = '\0';
                break;
            }
        fclose(f);
    }
    struct utsname u;
    if (uname(&u) == 0)
        snprintf(m->kernel, sizeof m->kernel, "%s %s %s", u.sysname, u.release, u.machine);
    m->cores = sysconf(_SC_NPROCESSORS_ONLN);
    m->mem_gib = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE) / (1024.0 * 1024 * 1024);
}

/* ---- Terminal ------------------------------------------------------------------- */

static double ms(uint64_t us) { return (double)us / 1000.0; }

static double step_accuracy(const fmb_step_t *s) {
    return s->acc.labelled ? (double)s->acc.correct / (double)s->acc.labelled : -1;
}

void fmb_print_header(const fmb_run_t *run) {
    const fmb_options_t *o = run->o;
    machine_t m;
    machine_info(&m);
    printf("fmbench %s, commit %s, on %s (%s, %ld cores), load average %.2f %.2f %.2f\n", run->date, fmb_commit(o),
           m.host, m.cpu, m.cores, run->load_start[0], run->load_start[1], run->load_start[2]);
    cJSON *models = run->models_json ? cJSON_Parse(run->models_json) : NULL;
    printf("server %s", o->server);
    const cJSON *backend = cJSON_GetObjectItemCaseSensitive(models, "backend");
    if (cJSON_IsString(backend))
        printf(", backend %s", backend->valuestring);
    const cJSON *mm, *list = cJSON_GetObjectItemCaseSensitive(models, "models");
    cJSON_ArrayForEach(mm, list) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(mm, "role");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(mm, "name");
        const cJSON *ver = cJSON_GetObjectItemCaseSensitive(mm, "version");
        if (cJSON_IsString(role) && cJSON_IsString(name) && cJSON_IsString(ver))
            printf("; %s %s %s", role->valuestring, name->valuestring, ver->valuestring);
    }
    const cJSON *ratio = cJSON_GetObjectItemCaseSensitive(models, "ab_test_ratio");
    if (cJSON_IsNumber(ratio))
        printf("; A/B ratio %g", ratio->valuedouble);
    printf("\n");
    cJSON_Delete(models);
    printf("images %s: %zu%s; %d per request; %d connections; routing %s%s%s\n", run->source, run->ds.n,
           run->labelled ? ", labelled" : ", no labels (no accuracy)", o->batch, o->connections,
           o->version ? "pinned to " : o->keys ? "by sticky keys" : o->key ? "by the key " : "by the A/B split",
           o->version ? o->version : o->key ? o->key : "", o->keys ? "" : "");
    printf("measurement: warm-up %g s, windows of %g s; stable when throughput and p99 each vary by at most %g %% "
           "over the last %d windows (at most %d)\n\n",
           o->warmup_s, o->window_s, o->stability_pct, o->stable_windows, o->max_windows);
    printf("%-20s %9s %9s %8s %8s %8s %8s %8s %8s %7s %7s %7s %8s %6s %6s %7s %s\n", "step", "req/s", "img/s",
           "p50 ms", "p90 ms", "p95 ms", "p99 ms", "p99.9 ms", "max ms", "queue", "compute", "ovh", "lag99 ms",
           "batch", "errors", "acc", "windows");
    printf("%-20s %9s %9s %8s %8s %8s %8s %8s %8s %7s %7s %7s %8s %6s %6s %7s\n", "", "", "", "", "", "", "", "",
           "", "p50 us", "p50 us", "p50 us", "", "", "", "");
    fflush(stdout);
}

void fmb_print_step(const fmb_run_t *run, const fmb_step_t *s) {
    (void)run;
    char label[64], acc[16], lag[16], batch[16], win[48];
    fmb_step_label(s, label, sizeof label);
    double a = step_accuracy(s);
    if (a >= 0)
        snprintf(acc, sizeof acc, "%.4f", a);
    else
        snprintf(acc, sizeof acc, "-");
    if (s->mode == FMB_OPEN)
        snprintf(lag, sizeof lag, "%.3f", ms(fm_hdr_percentile(s->acc.lag, 99)));
    else
        snprintf(lag, sizeof lag, "-");
    if (s->avg_batch > 0)
        snprintf(batch, sizeof batch, "%.1f", s->avg_batch);
    else
        snprintf(batch, sizeof batch, "-");
    snprintf(win, sizeof win, "%d/%d %s", s->windows_used, s->windows_run,
             s->saturated ? "SATURATED" : s->timed_out ? "TIMED OUT" : s->stable ? "stable" : "unstable");
    const fm_hdr_t *l = s->acc.lat;
    printf("%-20s %9.0f %9.0f %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f %7" PRIu64 " %7" PRIu64 " %7" PRIu64
           " %8s %6s %6" PRIu64 " %7s %s\n",
           label, s->rps, s->ips, ms(fm_hdr_percentile(l, 50)), ms(fm_hdr_percentile(l, 90)),
           ms(fm_hdr_percentile(l, 95)), ms(fm_hdr_percentile(l, 99)), ms(fm_hdr_percentile(l, 99.9)),
           ms(fm_hdr_max(l)), fm_hdr_percentile(s->acc.queue, 50), fm_hdr_percentile(s->acc.compute, 50),
           fm_hdr_percentile(s->acc.overhead, 50), lag, batch, fmb_errs_total(&s->acc.errs), acc, win);
    if (fmb_errs_total(&s->acc.errs)) {
        printf("%-20s errors:", "");
        for (int i = 0; i < s->acc.errs.ncodes; i++)
            printf(" %s %" PRIu64, s->acc.errs.code[i], s->acc.errs.n[i]);
        printf("\n");
    }
    if (s->mode == FMB_OPEN && s->acc.sent && s->acc.late)
        printf("%-20s behind schedule: %.1f %% of requests were sent more than %d µs late (lag p50 %.3f ms, max "
               "%.3f ms); sent %.0f of %.0f req/s\n",
               "", 100.0 * (double)s->acc.late / (double)s->acc.sent, FMB_LATE_US,
               ms(fm_hdr_percentile(s->acc.lag, 50)), ms(fm_hdr_max(s->acc.lag)), s->sent_rps, s->target_rps);
    if (s->note[0])
        printf("%-20s %s\n", "", s->note);
    fflush(stdout);
}

void fmb_print_summary(const fmb_run_t *run) {
    printf("\n");
    for (int i = 0; i < run->nsteps; i++)
        if (run->steps[i].aborted && run->steps[i].note[0]) {
            char label[64];
            fmb_step_label(&run->steps[i], label, sizeof label);
            printf("%s: %s\n", label, run->steps[i].note);
        }
    for (int i = 0; i < run->nanswers; i++) {
        const fmb_answers_t *a = &run->answers[i];
        if (run->labelled)
            printf("version %s (%s): answered %zu of the %zu images; accuracy over them %.4f\n", a->version, a->role,
                   a->covered, run->ds.n, a->covered ? (double)a->correct / (double)a->covered : 0.0);
        else
            printf("version %s (%s): answered %zu of the %zu images (no labels: accuracy unknown)\n", a->version,
                   a->role, a->covered, run->ds.n);
    }
    if (run->fatal[0])
        printf("run stopped: %s\n", run->fatal);
    fflush(stdout);
}

/* ---- JSON ------------------------------------------------------------------------ */

static cJSON *hist_json(const fm_hdr_t *h, int full) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "count", (double)fm_hdr_count(h));
    cJSON_AddNumberToObject(j, "min", (double)fm_hdr_min(h));
    cJSON_AddNumberToObject(j, "mean", fm_hdr_mean(h));
    cJSON_AddNumberToObject(j, "p50", (double)fm_hdr_percentile(h, 50));
    cJSON_AddNumberToObject(j, "p90", (double)fm_hdr_percentile(h, 90));
    if (full)
        cJSON_AddNumberToObject(j, "p95", (double)fm_hdr_percentile(h, 95));
    cJSON_AddNumberToObject(j, "p99", (double)fm_hdr_percentile(h, 99));
    if (full) {
        cJSON_AddNumberToObject(j, "p99.9", (double)fm_hdr_percentile(h, 99.9));
        cJSON_AddNumberToObject(j, "p99.99", (double)fm_hdr_percentile(h, 99.99));
    }
    cJSON_AddNumberToObject(j, "max", (double)fm_hdr_max(h));
    return j;
}

static cJSON *errs_json(const fmb_errs_t *e) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "total", (double)fmb_errs_total(e));
    cJSON *by = cJSON_AddObjectToObject(j, "by_code");
    for (int i = 0; i < e->ncodes; i++)
        cJSON_AddNumberToObject(by, e->code[i], (double)e->n[i]);
    return j;
}

static cJSON *step_json(const fmb_run_t *run, const fmb_step_t *s) {
    const fmb_options_t *o = run->o;
    cJSON *j = cJSON_CreateObject();
    char label[64];
    fmb_step_label(s, label, sizeof label);
    cJSON_AddStringToObject(j, "label", label);
    cJSON_AddStringToObject(j, "mode", s->mode == FMB_CLOSED ? "closed" : "open");
    if (s->mode == FMB_CLOSED) {
        cJSON_AddNumberToObject(j, "concurrency", s->concurrency);
        cJSON_AddNullToObject(j, "target_rps");
        cJSON_AddNullToObject(j, "arrivals");
    } else {
        cJSON_AddNullToObject(j, "concurrency");
        cJSON_AddNumberToObject(j, "target_rps", s->target_rps);
        cJSON_AddStringToObject(j, "arrivals", fm_arrivals_kind_name(s->arrivals));
        if (s->rate_fraction > 0)
            cJSON_AddNumberToObject(j, "rate_of_peak", s->rate_fraction);
        else
            cJSON_AddNullToObject(j, "rate_of_peak");
    }
    cJSON_AddNumberToObject(j, "connections", s->connections_used);
    cJSON_AddNumberToObject(j, "images_per_request", o->batch);
    cJSON *w = cJSON_AddObjectToObject(j, "windows");
    cJSON_AddNumberToObject(w, "run", s->windows_run);
    cJSON_AddNumberToObject(w, "used", s->windows_used);
    cJSON_AddBoolToObject(w, "stable", s->stable);
    cJSON_AddNumberToObject(w, "seconds_each", o->window_s);
    cJSON *wr = cJSON_AddArrayToObject(w, "requests_per_s"), *wp = cJSON_AddArrayToObject(w, "latency_p99_us");
    for (int i = 0; i < s->windows_run && i < FMB_MAX_WINDOWS; i++) {
        cJSON_AddItemToArray(wr, cJSON_CreateNumber(s->win_rps[i]));
        cJSON_AddItemToArray(wp, cJSON_CreateNumber(s->win_p99_us[i]));
    }
    cJSON_AddBoolToObject(j, "stable", s->stable);
    cJSON_AddBoolToObject(j, "saturated", s->saturated);
    cJSON_AddBoolToObject(j, "timed_out", s->timed_out);
    cJSON_AddNumberToObject(j, "duration_s", s->seconds);
    cJSON_AddNumberToObject(j, "requests", (double)s->done_requests);
    cJSON_AddNumberToObject(j, "images", (double)s->done_images);
    cJSON *t = cJSON_AddObjectToObject(j, "throughput");
    cJSON_AddNumberToObject(t, "requests_per_s", s->rps);
    cJSON_AddNumberToObject(t, "images_per_s", s->ips);
    cJSON_AddItemToObject(j, "latency_us", hist_json(s->acc.lat, 1));
    cJSON_AddItemToObject(j, "service_us", hist_json(s->acc.service, 1));
    cJSON_AddItemToObject(j, "server_queue_us", hist_json(s->acc.queue, 0));
    cJSON_AddItemToObject(j, "server_compute_us", hist_json(s->acc.compute, 0));
    cJSON_AddItemToObject(j, "overhead_us", hist_json(s->acc.overhead, 0));
    if (s->mode == FMB_OPEN) {
        cJSON *sch = cJSON_AddObjectToObject(j, "schedule");
        cJSON_AddNumberToObject(sch, "target_rps", s->target_rps);
        cJSON_AddNumberToObject(sch, "sent_rps", s->sent_rps);
        cJSON_AddNumberToObject(sch, "due", (double)s->acc.sent);
        cJSON_AddNumberToObject(sch, "late", (double)s->acc.late);
        cJSON_AddNumberToObject(sch, "late_share", s->acc.sent ? (double)s->acc.late / (double)s->acc.sent : 0);
        cJSON_AddNumberToObject(sch, "late_threshold_us", FMB_LATE_US);
        cJSON_AddItemToObject(sch, "send_lag_us", hist_json(s->acc.lag, 1));
    } else {
        cJSON_AddNullToObject(j, "schedule");
    }
    cJSON_AddItemToObject(j, "errors", errs_json(&s->acc.errs));
    cJSON_AddNumberToObject(j, "incomplete", (double)s->acc.incomplete);
    if (run->labelled && s->acc.labelled) {
        cJSON *a = cJSON_AddObjectToObject(j, "accuracy");
        cJSON_AddNumberToObject(a, "labelled", (double)s->acc.labelled);
        cJSON_AddNumberToObject(a, "correct", (double)s->acc.correct);
        cJSON_AddNumberToObject(a, "accuracy", step_accuracy(s));
    } else {
        cJSON_AddNullToObject(j, "accuracy");
    }
    cJSON_AddNumberToObject(j, "answers_changed", (double)s->acc.changed);
    cJSON *vs = cJSON_AddArrayToObject(j, "versions");
    for (int i = 0; i < s->acc.nver; i++) {
        const fmb_vacc_t *v = &s->acc.ver[i];
        cJSON *vj = cJSON_CreateObject();
        cJSON_AddStringToObject(vj, "version", v->version);
        cJSON_AddStringToObject(vj, "role", v->role);
        cJSON_AddNumberToObject(vj, "requests", (double)v->requests);
        cJSON_AddNumberToObject(vj, "images", (double)v->images);
        if (v->labelled)
            cJSON_AddNumberToObject(vj, "accuracy", (double)v->correct / (double)v->labelled);
        else
            cJSON_AddNullToObject(vj, "accuracy");
        cJSON_AddNumberToObject(vj, "latency_p50_us", (double)fm_hdr_percentile(v->lat, 50));
        cJSON_AddNumberToObject(vj, "latency_p99_us", (double)fm_hdr_percentile(v->lat, 99));
        cJSON_AddItemToArray(vs, vj);
    }
    cJSON *srv = cJSON_AddObjectToObject(j, "server");
    if (s->snap0.valid && s->snap1.valid) {
        uint64_t images = s->snap1.images - s->snap0.images, batches = s->snap1.batches - s->snap0.batches;
        uint64_t success = s->snap1.success - s->snap0.success;
        cJSON_AddNumberToObject(srv, "images", (double)images);
        cJSON_AddNumberToObject(srv, "batches", (double)batches);
        if (batches)
            cJSON_AddNumberToObject(srv, "avg_batch_size", s->avg_batch);
        else
            cJSON_AddNullToObject(srv, "avg_batch_size");
        if (success) {
            cJSON_AddNumberToObject(srv, "queue_us_mean",
                                    (double)(s->snap1.queue_us - s->snap0.queue_us) / (double)success);
            cJSON_AddNumberToObject(srv, "compute_us_mean",
                                    (double)(s->snap1.compute_us - s->snap0.compute_us) / (double)success);
        }
    } else {
        cJSON_AddNullToObject(srv, "avg_batch_size");
    }
    if (s->note[0])
        cJSON_AddStringToObject(j, "note", s->note);
    return j;
}

static cJSON *parse_or_null(const char *text) {
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    return j ? j : cJSON_CreateNull();
}

int fmb_write_json(const fmb_run_t *run, const char *path) {
    const fmb_options_t *o = run->o;
    machine_t m;
    machine_info(&m);
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "tool", "fmbench");
    cJSON_AddNumberToObject(root, "format", 1);
    if (o->title)
        cJSON_AddStringToObject(root, "title", o->title);
    cJSON_AddStringToObject(root, "date", run->date);
    cJSON_AddStringToObject(root, "commit", fmb_commit(o));
    cJSON_AddStringToObject(root, "command", o->command);
    cJSON *mj = cJSON_AddObjectToObject(root, "machine");
    cJSON_AddStringToObject(mj, "hostname", m.host);
    cJSON_AddStringToObject(mj, "cpu", m.cpu);
    cJSON_AddNumberToObject(mj, "cores", (double)m.cores);
    cJSON_AddNumberToObject(mj, "memory_gib", m.mem_gib);
    cJSON_AddStringToObject(mj, "kernel", m.kernel);
    cJSON_AddItemToObject(mj, "load_average_start", cJSON_CreateDoubleArray(run->load_start, 3));
    cJSON_AddItemToObject(mj, "load_average_end", cJSON_CreateDoubleArray(run->load_end, 3));
    cJSON *tags = cJSON_AddObjectToObject(root, "tags");
    for (int i = 0; i < o->ntags; i++) {
        char key[128];
        const char *eq = strchr(o->tags[i], '=');
        size_t n = (size_t)(eq - o->tags[i]) < sizeof key - 1 ? (size_t)(eq - o->tags[i]) : sizeof key - 1;
        memcpy(key, o->tags[i], n);
        key[n] = '\0';
        cJSON_AddStringToObject(tags, key, eq + 1);
    }
    cJSON *oj = cJSON_AddObjectToObject(root, "options");
    cJSON_AddStringToObject(oj, "server", o->server);
    cJSON_AddNumberToObject(oj, "connections", o->connections);
    cJSON_AddNumberToObject(oj, "depth", o->depth);
    cJSON_AddNumberToObject(oj, "images_per_request", o->batch);
    if (o->version)
        cJSON_AddStringToObject(oj, "version", o->version);
    else
        cJSON_AddNullToObject(oj, "version");
    if (o->key)
        cJSON_AddStringToObject(oj, "key", o->key);
    cJSON_AddNumberToObject(oj, "keys", o->keys);
    cJSON_AddBoolToObject(oj, "auth", o->token != NULL);
    cJSON_AddNumberToObject(oj, "deadline_ms", o->deadline_ms);
    cJSON_AddNumberToObject(oj, "warmup_s", o->warmup_s);
    cJSON_AddNumberToObject(oj, "window_s", o->window_s);
    cJSON_AddNumberToObject(oj, "stable_windows", o->stable_windows);
    cJSON_AddNumberToObject(oj, "max_windows", o->max_windows);
    cJSON_AddNumberToObject(oj, "stability_pct", o->stability_pct);
    cJSON_AddNumberToObject(oj, "drain_timeout_s", o->drain_timeout_s);
    cJSON_AddNumberToObject(oj, "max_outstanding", (double)o->max_outstanding);
    cJSON_AddNumberToObject(oj, "seed", (double)o->seed);
    cJSON_AddNumberToObject(oj, "min_accuracy", o->min_accuracy);
    cJSON_AddNumberToObject(oj, "max_changed", o->max_changed);
    cJSON_AddNumberToObject(oj, "histogram_relative_error", 1.0 / (double)(1u << FMB_HDR_BITS));
    cJSON *d = cJSON_AddObjectToObject(root, "data");
    cJSON_AddStringToObject(d, "source", run->source);
    cJSON_AddNumberToObject(d, "images", (double)run->ds.n);
    cJSON_AddBoolToObject(d, "labelled", run->labelled);
    cJSON_AddStringToObject(d, "sha256", run->ds.sha256);
    cJSON *srv = cJSON_AddObjectToObject(root, "server");
    cJSON_AddItemToObject(srv, "models", parse_or_null(run->models_json));
    cJSON_AddItemToObject(srv, "stats_start", parse_or_null(run->stats_start_json));
    cJSON_AddItemToObject(srv, "stats_end", parse_or_null(run->stats_end_json));
    if (run->peak_rps > 0) {
        cJSON *pk = cJSON_AddObjectToObject(root, "closed_loop_peak");
        cJSON_AddNumberToObject(pk, "requests_per_s", run->peak_rps);
        cJSON_AddStringToObject(pk, "step", run->peak_label);
    }
    cJSON *steps = cJSON_AddArrayToObject(root, "steps");
    for (int i = 0; i < run->nsteps; i++)
        if (run->steps[i].ran)
            cJSON_AddItemToArray(steps, step_json(run, &run->steps[i]));
    cJSON *skipped = cJSON_AddArrayToObject(root, "skipped");
    for (int i = 0; i < run->nsteps; i++)
        if (run->steps[i].aborted) {
            char label[64];
            fmb_step_label(&run->steps[i], label, sizeof label);
            cJSON *sj = cJSON_CreateObject();
            cJSON_AddStringToObject(sj, "label", label);
            cJSON_AddStringToObject(sj, "why", run->steps[i].note);
            cJSON_AddItemToArray(skipped, sj);
        }
    cJSON *vs = cJSON_AddArrayToObject(root, "versions");
    for (int i = 0; i < run->nanswers; i++) {
        const fmb_answers_t *a = &run->answers[i];
        cJSON *vj = cJSON_CreateObject();
        cJSON_AddStringToObject(vj, "version", a->version);
        cJSON_AddStringToObject(vj, "role", a->role);
        cJSON_AddNumberToObject(vj, "images_covered", (double)a->covered);
        if (run->labelled && a->covered)
            cJSON_AddNumberToObject(vj, "dataset_accuracy", (double)a->correct / (double)a->covered);
        else
            cJSON_AddNullToObject(vj, "dataset_accuracy");
        cJSON_AddItemToArray(vs, vj);
    }
    int ok = !run->wrong && !run->fatal[0] && !run->interrupted;
    cJSON_AddBoolToObject(root, "ok", ok);
    cJSON *fl = cJSON_AddArrayToObject(root, "failures");
    for (int i = 0; i < run->nfailures; i++)
        cJSON_AddItemToArray(fl, cJSON_CreateString(run->failures[i]));
    if (run->fatal[0])
        cJSON_AddItemToArray(fl, cJSON_CreateString(run->fatal));
    cJSON_AddBoolToObject(root, "interrupted", run->interrupted);
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text)
        return fm_fail(FM_ENOMEM, "JSON output");
    FILE *f = fopen(path, "w");
    int rc = 0;
    if (!f || fputs(text, f) < 0 || fputc('\n', f) < 0)
        rc = fm_fail(FM_EIO, "cannot write %s: %s", path, strerror(errno));
    if (f && fclose(f) != 0 && !rc)
        rc = fm_fail(FM_EIO, "cannot write %s: %s", path, strerror(errno));
    free(text);
    if (!rc && !o->quiet)
        printf("wrote %s\n", path);
    return rc;
}

/* ---- CSV ------------------------------------------------------------------------- */

int fmb_write_csv(const fmb_run_t *run, const char *path) {
    const fmb_options_t *o = run->o;
    FILE *f = fopen(path, "w");
    if (!f)
        return fm_fail(FM_EIO, "cannot write %s: %s", path, strerror(errno));
    fprintf(f, "date,commit,mode,arrivals,concurrency,target_rps,rate_of_peak,connections,images_per_request,requests_per_s,"
               "images_per_s,latency_p50_us,latency_p90_us,latency_p95_us,latency_p99_us,latency_p999_us,"
               "latency_max_us,latency_mean_us,service_p50_us,service_p99_us,server_queue_p50_us,"
               "server_queue_p99_us,server_compute_p50_us,server_compute_p99_us,overhead_p50_us,overhead_p99_us,"
               "send_lag_p50_us,send_lag_p99_us,send_lag_max_us,late_share,sent_rps,avg_batch_size,requests,"
               "images,duration_s,windows_run,windows_used,stable,saturated,timed_out,errors,errors_by_code,"
               "incomplete,accuracy,answers_changed\n");
    for (int i = 0; i < run->nsteps; i++) {
        const fmb_step_t *s = &run->steps[i];
        if (!s->ran)
            continue;
        const fmb_acc_t *a = &s->acc;
        char codes[512] = "";
        size_t used = 0;
        for (int k = 0; k < a->errs.ncodes && used < sizeof codes - 48; k++)
            used += (size_t)snprintf(codes + used, sizeof codes - used, "%s%s:%" PRIu64, k ? ";" : "",
                                     a->errs.code[k], a->errs.n[k]);
        int open = s->mode == FMB_OPEN;
        fprintf(f, "%s,%s,%s,%s,", run->date, fmb_commit(o), open ? "open" : "closed",
                open ? fm_arrivals_kind_name(s->arrivals) : "");
        if (open && s->rate_fraction > 0)
            fprintf(f, ",%.2f,%g,", s->target_rps, s->rate_fraction);
        else if (open)
            fprintf(f, ",%g,,", s->target_rps);
        else
            fprintf(f, "%d,,,", s->concurrency);
        fprintf(f, "%d,%d,%.2f,%.2f,", s->connections_used, o->batch, s->rps, s->ips);
        fprintf(f, "%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%.1f,",
                fm_hdr_percentile(a->lat, 50), fm_hdr_percentile(a->lat, 90), fm_hdr_percentile(a->lat, 95),
                fm_hdr_percentile(a->lat, 99), fm_hdr_percentile(a->lat, 99.9), fm_hdr_max(a->lat),
                fm_hdr_mean(a->lat));
        fprintf(f, "%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64,
                fm_hdr_percentile(a->service, 50), fm_hdr_percentile(a->service, 99), fm_hdr_percentile(a->queue, 50),
                fm_hdr_percentile(a->queue, 99), fm_hdr_percentile(a->compute, 50), fm_hdr_percentile(a->compute, 99),
                fm_hdr_percentile(a->overhead, 50), fm_hdr_percentile(a->overhead, 99));
        if (open)
            fprintf(f, ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%.4f,%.2f,", fm_hdr_percentile(a->lag, 50),
                    fm_hdr_percentile(a->lag, 99), fm_hdr_max(a->lag),
                    a->sent ? (double)a->late / (double)a->sent : 0.0, s->sent_rps);
        else
            fprintf(f, ",,,,,,");
        if (s->avg_batch > 0)
            fprintf(f, "%.2f", s->avg_batch);
        fprintf(f, ",%" PRIu64 ",%" PRIu64 ",%.3f,%d,%d,%d,%d,%d,%" PRIu64 ",%s,%" PRIu64 ",", s->done_requests,
                s->done_images, s->seconds, s->windows_run, s->windows_used, s->stable, s->saturated, s->timed_out,
                fmb_errs_total(&a->errs), codes, a->incomplete);
        if (a->labelled)
            fprintf(f, "%.6f", (double)a->correct / (double)a->labelled);
        fprintf(f, ",%" PRIu64 "\n", a->changed);
    }
    int rc = 0;
    if (ferror(f))
        rc = fm_fail(FM_EIO, "cannot write %s", path);
    if (fclose(f) != 0 && !rc)
        rc = fm_fail(FM_EIO, "cannot write %s: %s", path, strerror(errno));
    if (!rc && !o->quiet)
        printf("wrote %s\n", path);
    return rc;
}

/* ---- Plot ------------------------------------------------------------------------- */

static int find_gnuplot(char *out, size_t cap) {
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/bin:/bin";
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    char *save = NULL;
    for (char *d = strtok_r(buf, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        snprintf(out, cap, "%s/gnuplot", *d ? d : ".");
        if (access(out, X_OK) == 0)
            return 1;
    }
    return 0;
}

/* Escapes a string for a double-quoted gnuplot string. */
static void gp_quote(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fputc('\\', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

int fmb_write_plot(const fmb_run_t *run, const char *path) {
    const fmb_options_t *o = run->o;
    char gp[4200];
    if (!find_gnuplot(gp, sizeof gp)) {
        fprintf(stderr, "fmbench: gnuplot not found on PATH; no plot written (install gnuplot, e.g. the Debian "
                        "package gnuplot-nox)\n");
        return 1;
    }
    /* Series: closed loop, then open loop per arrival kind. */
    struct {
        fmb_mode_t mode;
        fm_arrivals_kind_t arr;
        const char *name;
    } groups[3] = {{FMB_CLOSED, 0, "closed loop"},
                   {FMB_OPEN, FM_ARRIVALS_POISSON, "open loop, Poisson arrivals"},
                   {FMB_OPEN, FM_ARRIVALS_CONSTANT, "open loop, constant arrivals"}};
    int count[3] = {0, 0, 0};
    for (int i = 0; i < run->nsteps; i++) {
        const fmb_step_t *s = &run->steps[i];
        if (!s->ran || s->done_requests == 0)
            continue;
        for (int g = 0; g < 3; g++)
            if (s->mode == groups[g].mode && (s->mode == FMB_CLOSED || s->arrivals == groups[g].arr))
                count[g]++;
    }
    if (count[0] + count[1] + count[2] == 0) {
        fprintf(stderr, "fmbench: no step with replies; no plot written\n");
        return 1;
    }
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "'%s'", gp);
    FILE *f = popen(cmd, "w");
    if (!f)
        return fm_fail(FM_EIO, "cannot start %s: %s", gp, strerror(errno));
    int panels = (count[0] > 0) + (count[1] > 0) + (count[2] > 0);
    /* Shared axes, so the panels compare at a glance. */
    double xmax = 0, ymin = 1e300, ymax = 0;
    for (int i = 0; i < run->nsteps; i++) {
        const fmb_step_t *s = &run->steps[i];
        if (!s->ran || s->done_requests == 0)
            continue;
        xmax = s->ips > xmax ? s->ips : xmax;
        double lo = ms(fm_hdr_percentile(s->acc.lat, 50)), hi = ms(fm_hdr_percentile(s->acc.lat, 99.9));
        ymin = lo > 0 && lo < ymin ? lo : ymin;
        ymax = hi > ymax ? hi : ymax;
    }
    if (ymin > ymax)
        ymin = ymax = 1;
    fprintf(f, "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
               "  set terminal pngcairo size %d,700 enhanced font 'sans,10'\n"
               "} else {\n  set terminal png size %d,700\n}\n",
            120 + 620 * panels, 120 + 620 * panels);
    fprintf(f, "set output ");
    gp_quote(f, path);
    fprintf(f, "\n");
    /* The backend's short name ("cpu", "cuda") from the server's models reply. */
    char backend[64] = "?";
    cJSON *models = run->models_json ? cJSON_Parse(run->models_json) : NULL;
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(models, "backend");
    if (cJSON_IsString(b)) {
        snprintf(backend, sizeof backend, "%s", b->valuestring);
        backend[strcspn(backend, ": ")] = '\0';
    }
    cJSON_Delete(models);
    char title[1024];
    snprintf(title, sizeof title, "%s%sbackend %s, %d images/request, %d connections, %s; %s, commit %s",
             o->title ? o->title : "", o->title ? "\\n" : "", backend, o->batch, o->connections,
             o->version ? o->version : "A/B split", run->date, fmb_commit(o));
    fprintf(f, "set multiplot layout 1,%d title \"%s\" noenhanced\n", panels, title);
    fprintf(f, "set xlabel 'throughput (images/s)'\nset ylabel 'latency (ms)'\nset logscale y\n"
               "set grid xtics ytics mytics\nset key left top noenhanced box opaque\n"
               "set xrange [0:%.0f]\nset yrange [%g:%g]\n",
            xmax * 1.1 + 1, ymin / 1.5, ymax * 2);
    /* One data block per group: images/s, p50, p90, p99, p99.9 (ms), label. */
    for (int g = 0; g < 3; g++) {
        if (!count[g])
            continue;
        fprintf(f, "$g%d << EOD\n", g);
        for (int i = 0; i < run->nsteps; i++) {
            const fmb_step_t *s = &run->steps[i];
            if (!s->ran || s->done_requests == 0 || s->mode != groups[g].mode ||
                (s->mode == FMB_OPEN && s->arrivals != groups[g].arr))
                continue;
            const fm_hdr_t *l = s->acc.lat;
            char label[48];
            if (s->mode == FMB_CLOSED)
                snprintf(label, sizeof label, "c=%d", s->concurrency);
            else
                snprintf(label, sizeof label, "%.0f/s%s", s->target_rps, s->saturated ? "(sat)" : "");
            fprintf(f, "%.3f %.4f %.4f %.4f %.4f %s\n", s->ips, ms(fm_hdr_percentile(l, 50)),
                    ms(fm_hdr_percentile(l, 90)), ms(fm_hdr_percentile(l, 99)), ms(fm_hdr_percentile(l, 99.9)), label);
        }
        fprintf(f, "EOD\n");
    }
    /* One panel per load kind; one line per percentile; each point of the
     * p99 line labelled with its load, to find the knee. */
    static const char *const pct_name[4] = {"p50", "p90", "p99", "p99.9"};
    static const char *const pct_color[4] = {"#1f77b4", "#2ca02c", "#ff7f0e", "#d62728"};
    static const int dash[4] = {1, 2, 1, 3}, pt[4] = {7, 5, 9, 13};
    for (int g = 0; g < 3; g++) {
        if (!count[g])
            continue;
        fprintf(f, "set title '%s%s'\n", groups[g].name,
                g == 0 ? " (requests in flight)" : " (target rate; latency from the schedule)");
        fprintf(f, "plot ");
        for (int p = 0; p < 4; p++)
            fprintf(f, "%s$g%d using 1:%d with linespoints lw 2 dt %d pt %d ps 0.9 lc rgb '%s' title '%s'",
                    p ? ", \\\n     " : "", g, p + 2, dash[p], pt[p], pct_color[p], pct_name[p]);
        fprintf(f, ", \\\n     $g%d using 1:4:6 with labels offset 0,0.9 font ',8' tc rgb '#444444' notitle\n", g);
    }
    fprintf(f, "unset multiplot\n");
    int st = pclose(f);
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return fm_fail(FM_EIO, "gnuplot failed (status %d) writing %s", st, path);
    if (access(path, R_OK) != 0)
        return fm_fail(FM_EIO, "gnuplot wrote no %s", path);
    if (!o->quiet)
        printf("wrote %s\n", path);
    return 0;
}
