/* fmb_main.c: fmbench, the load generator for fmserve: options, the images,
 * the server's description before and after, the run, the outputs and the
 * verdict (exit code). docs/fmbench.md documents every flag and field. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fm_client.h"
#include "fm_error.h"
#include "fm_time.h"
#include "fmb.h"


static void usage(FILE *f) {
    fprintf(f,
        "usage: fmbench [--server HOST:PORT] (--data DIR [--split t10k|train] | --images FILE [--labels FILE])\n"
        "               [--concurrency LIST] [--rate LIST [--arrivals poisson|constant[,...]]] [options]\n"
        "Load generator for fmserve: closed-loop (fixed requests in flight) and open-loop (scheduled\n"
        "arrivals, latency from the scheduled time) sweeps, measured in windows until stable.\n"
        "\n"
        "Server and requests:\n"
        "  --server HOST:PORT     the server (default $FM_SERVER, else 127.0.0.1:7070)\n"
        "  --token T              auth token (default $FM_AUTH_TOKEN)\n"
        "  --connections N        TCP connections (default 4)\n"
        "  --depth N              open loop: most requests in flight per connection, the rest wait in\n"
        "                         the client (latency still counts from the schedule); 0 = no limit (default)\n"
        "  --batch N              images per request (default 16)\n"
        "  --version V            pin a version: stable, canary or an id such as v2 (default: the A/B split)\n"
        "  --key K                one sticky routing key for every request\n"
        "  --keys N               cycle through N sticky keys user-0 .. user-(N-1)\n"
        "  --deadline-ms N        the requests' deadline_ms (default none)\n"
        "Images:\n"
        "  --data DIR             labelled set DIR/<split>-images-idx3-ubyte[.gz] + labels (default $FM_DATA)\n"
        "  --split S              t10k (default) or train\n"
        "  --images FILE          an IDX images file; --labels FILE adds its labels\n"
        "  --limit N              use the first N images only\n"
        "Load (LIST: 1,2,4 or A:B doubling, A:B:xF factor F, A:B:+S step S; items can be mixed):\n"
        "  --concurrency LIST     closed loop: requests kept in flight (default 1 when no --rate)\n"
        "  --rate LIST            open loop: target requests per second\n"
        "  --rate-of-peak LIST    open loop: targets as shares of the highest closed-loop throughput of\n"
        "                         this run (e.g. 0.25,0.5,0.8,0.9,1,1.1), so one command finds the knee\n"
        "  --arrivals K[,K]       open loop schedule: poisson (default) and/or constant\n"
        "  --seed N               seed of the Poisson schedules (default 1)\n"
        "Measurement:\n"
        "  --warmup S             seconds of load before the first window (default 2)\n"
        "  --window S             seconds per measurement window (default 3)\n"
        "  --stable-windows N     windows the stability rule looks at, and that are reported (default 3)\n"
        "  --stability PCT        stable when throughput and p99 each vary by at most PCT %% of their mean\n"
        "                         over the last N windows (default 10)\n"
        "  --max-windows N        windows per step before giving up on stability (default 10)\n"
        "  --drain-timeout S      wait for the last window's replies at most S seconds (default 10)\n"
        "  --max-outstanding N    open loop: a step with more requests due and unanswered is saturated\n"
        "                         and stops (default 10000)\n"
        "  --latency-limit MS     end a sweep after a step whose p99 passes MS milliseconds\n"
        "  --keep-going           continue an open sweep past a saturated step\n"
        "Correctness (labels known):\n"
        "  --min-accuracy A       fail (exit 3) when a step's or a version's accuracy is below A (default 0.5)\n"
        "  --max-changed F        fail (exit 3) when more than share F of answers differ from the answer\n"
        "                         the same version gave earlier for the same image (default 0.001)\n"
        "Outputs:\n"
        "  --out PREFIX           write PREFIX.json, PREFIX.csv and PREFIX.png\n"
        "  --json FILE, --csv FILE, --plot FILE.png   each on its own\n"
        "  --title TEXT           plot title and JSON label\n"
        "  --tag KEY=VALUE        recorded in the JSON (repeatable), e.g. --tag max_batch_size=1\n"
        "  --commit TEXT          the commit to record (default: the build's)\n"
        "  --progress / --no-progress   live progress line (default: on a terminal; one line per window otherwise)\n"
        "  --quiet                print nothing but errors\n"
        "Exit: 0 done, 1 run failed, 2 usage, 3 wrong answers, 130 interrupted.\n");
}

/* ---- Sweep lists ---------------------------------------------------------------- */

static int bad(const char *flag, const char *why, const char *value) {
    fprintf(stderr, "fmbench: %s: %s (got '%s')\n", flag, why, value);
    return FMB_EXIT_USAGE;
}

/* Parses "1,2,4", "1:64", "1:64:x4", "100:1000:+100" into values. */
static int parse_list(const char *flag, const char *spec, double lo, double hi, int integer, double *out, int *n) {
    char buf[1024];
    if (strlen(spec) >= sizeof buf)
        return bad(flag, "list too long", spec);
    snprintf(buf, sizeof buf, "%s", spec);
    *n = 0;
    char *save = NULL;
    for (char *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        double a, b = 0, step = 2;
        int additive = 0;
        char *end;
        a = strtod(item, &end);
        if (end == item)
            return bad(flag, "not a number or range", spec);
        if (*end == ':') {
            char *p = end + 1;
            b = strtod(p, &end);
            if (end == p)
                return bad(flag, "range A:B needs an end", spec);
            if (*end == ':') {
                p = end + 1;
                if (*p == 'x' || *p == '*') {
                    step = strtod(p + 1, &end);
                } else if (*p == '+') {
                    additive = 1;
                    step = strtod(p + 1, &end);
                } else {
                    return bad(flag, "range step must be xF (factor) or +S (increment)", spec);
                }
                if (end == p + 1)
                    return bad(flag, "range step needs a number", spec);
            }
            if (*end)
                return bad(flag, "junk after the range", spec);
            if (b < a || (additive ? step <= 0 : step <= 1))
                return bad(flag, "a range must grow: A <= B, factor > 1 or increment > 0", spec);
        } else if (*end) {
            return bad(flag, "not a number", spec);
        } else {
            b = a;
        }
        for (double v = a; v <= b * (1 + 1e-9); v = additive ? v + step : v * step) {
            if (!(v >= lo && v <= hi) || (integer && v != floor(v)))
                return bad(flag, integer ? "values must be whole numbers in range" : "value out of range", spec);
            if (*n >= FMB_MAX_STEPS)
                return bad(flag, "more than 256 steps", spec);
            out[(*n)++] = v;
            if (a == b)
                break;
        }
    }
    if (*n == 0)
        return bad(flag, "empty list", spec);
    return 0;
}

static int parse_num(const char *flag, const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || !(v >= lo && v <= hi)) {
        fprintf(stderr, "fmbench: %s must be a number in %g..%g (got '%s')\n", flag, lo, hi, s);
        return FMB_EXIT_USAGE;
    }
    *out = v;
    return 0;
}

static int parse_int(const char *flag, const char *s, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "fmbench: %s must be a whole number in %lld..%lld (got '%s')\n", flag, lo, hi, s);
        return FMB_EXIT_USAGE;
    }
    *out = v;
    return 0;
}

/* ---- Options ------------------------------------------------------------------------ */

enum {
    O_SERVER = 256, O_TOKEN, O_CONNECTIONS, O_DEPTH, O_BATCH, O_VERSION, O_KEY, O_KEYS, O_DEADLINE, O_DATA, O_SPLIT,
    O_IMAGES, O_LABELS, O_LIMIT, O_CONC, O_RATE, O_FRAC, O_ARRIVALS, O_SEED, O_WARMUP, O_WINDOW, O_STABLE, O_STABILITY,
    O_MAXWIN, O_DRAIN, O_MAXOUT, O_LATLIM, O_KEEP, O_MINACC, O_MAXCHG, O_OUT, O_JSON, O_CSV, O_PLOT, O_TITLE, O_TAG,
    O_COMMIT, O_PROGRESS, O_NOPROGRESS, O_QUIET, O_HELP
};

static int parse_options(int argc, char **argv, fmb_options_t *o) {
    memset(o, 0, sizeof *o);
    o->split = "t10k";
    o->batch = 16;
    o->connections = 4;
    o->narrivals = 1;
    o->arrivals[0] = FM_ARRIVALS_POISSON;
    o->seed = 1;
    o->warmup_s = 2;
    o->window_s = 3;
    o->stable_windows = 3;
    o->max_windows = 10;
    o->stability_pct = 10;
    o->drain_timeout_s = 10;
    o->max_outstanding = 10000;
    o->min_accuracy = 0.5;
    o->max_changed = 0.001;
    o->progress = -1;
    o->token = getenv("FM_AUTH_TOKEN");
    if (o->token && !*o->token)
        o->token = NULL;
    const char *env_server = getenv("FM_SERVER");
    o->server = env_server && *env_server ? env_server : "127.0.0.1:7070";
    size_t used = 0;
    for (int i = 0; i < argc && used + 2 < sizeof o->command; i++)
        used += (size_t)snprintf(o->command + used, sizeof o->command - used, "%s%s", i ? " " : "", argv[i]);

    static const struct option longopts[] = {
        {"server", required_argument, 0, O_SERVER}, {"token", required_argument, 0, O_TOKEN},
        {"connections", required_argument, 0, O_CONNECTIONS}, {"depth", required_argument, 0, O_DEPTH},
        {"batch", required_argument, 0, O_BATCH}, {"images-per-request", required_argument, 0, O_BATCH},
        {"version", required_argument, 0, O_VERSION}, {"key", required_argument, 0, O_KEY},
        {"keys", required_argument, 0, O_KEYS}, {"deadline-ms", required_argument, 0, O_DEADLINE},
        {"data", required_argument, 0, O_DATA}, {"split", required_argument, 0, O_SPLIT},
        {"images", required_argument, 0, O_IMAGES}, {"labels", required_argument, 0, O_LABELS},
        {"limit", required_argument, 0, O_LIMIT}, {"concurrency", required_argument, 0, O_CONC},
        {"rate", required_argument, 0, O_RATE}, {"rate-of-peak", required_argument, 0, O_FRAC}, {"arrivals", required_argument, 0, O_ARRIVALS},
        {"seed", required_argument, 0, O_SEED}, {"warmup", required_argument, 0, O_WARMUP},
        {"window", required_argument, 0, O_WINDOW}, {"stable-windows", required_argument, 0, O_STABLE},
        {"stability", required_argument, 0, O_STABILITY}, {"max-windows", required_argument, 0, O_MAXWIN},
        {"drain-timeout", required_argument, 0, O_DRAIN}, {"max-outstanding", required_argument, 0, O_MAXOUT},
        {"latency-limit", required_argument, 0, O_LATLIM}, {"keep-going", no_argument, 0, O_KEEP},
        {"min-accuracy", required_argument, 0, O_MINACC}, {"max-changed", required_argument, 0, O_MAXCHG},
        {"out", required_argument, 0, O_OUT}, {"json", required_argument, 0, O_JSON},
        {"csv", required_argument, 0, O_CSV}, {"plot", required_argument, 0, O_PLOT},
        {"title", required_argument, 0, O_TITLE}, {"tag", required_argument, 0, O_TAG},
        {"commit", required_argument, 0, O_COMMIT}, {"progress", no_argument, 0, O_PROGRESS},
        {"no-progress", no_argument, 0, O_NOPROGRESS}, {"quiet", no_argument, 0, O_QUIET},
        {"help", no_argument, 0, O_HELP}, {0, 0, 0, 0}};
    int ch, rc = 0;
    long long iv;
    double dv, list[FMB_MAX_STEPS];
    int n;
    while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (ch) {
        case O_SERVER: o->server = optarg; break;
        case O_TOKEN: o->token = optarg; break;
        case O_CONNECTIONS:
            if (!(rc = parse_int("--connections", optarg, 1, 4096, &iv)))
                o->connections = (int)iv;
            break;
        case O_DEPTH:
            if (!(rc = parse_int("--depth", optarg, 0, 1 << 20, &iv)))
                o->depth = (int)iv;
            break;
        case O_BATCH:
            if (!(rc = parse_int("--batch", optarg, 1, 65536, &iv)))
                o->batch = (int)iv;
            break;
        case O_VERSION: o->version = optarg; break;
        case O_KEY: o->key = optarg; break;
        case O_KEYS:
            if (!(rc = parse_int("--keys", optarg, 1, 1 << 30, &iv)))
                o->keys = (int)iv;
            break;
        case O_DEADLINE:
            if (!(rc = parse_int("--deadline-ms", optarg, 0, 3600000, &iv)))
                o->deadline_ms = (uint32_t)iv;
            break;
        case O_DATA: o->data_dir = optarg; break;
        case O_SPLIT: o->split = optarg; break;
        case O_IMAGES: o->images_path = optarg; break;
        case O_LABELS: o->labels_path = optarg; break;
        case O_LIMIT:
            if (!(rc = parse_int("--limit", optarg, 1, 1LL << 40, &iv)))
                o->limit = (size_t)iv;
            break;
        case O_CONC:
            if (!(rc = parse_list("--concurrency", optarg, 1, 1 << 20, 1, list, &n))) {
                o->nconcurrency = n;
                for (int i = 0; i < n; i++)
                    o->concurrency[i] = (int)list[i];
            }
            break;
        case O_RATE:
            if (!(rc = parse_list("--rate", optarg, 0.001, 1e7, 0, list, &n))) {
                o->nrates = n;
                memcpy(o->rates, list, (size_t)n * sizeof list[0]);
            }
            break;
        case O_FRAC:
            if (!(rc = parse_list("--rate-of-peak", optarg, 0.001, 100, 0, list, &n))) {
                o->nfractions = n;
                memcpy(o->fractions, list, (size_t)n * sizeof list[0]);
            }
            break;
        case O_ARRIVALS: {
            char buf[64], *save = NULL;
            snprintf(buf, sizeof buf, "%s", optarg);
            o->narrivals = 0;
            for (char *k = strtok_r(buf, ",", &save); k && !rc; k = strtok_r(NULL, ",", &save)) {
                if (o->narrivals == 2 || fm_arrivals_parse(k, &o->arrivals[o->narrivals]) != 0)
                    rc = bad("--arrivals", "poisson and/or constant", optarg);
                else
                    o->narrivals++;
            }
            if (!o->narrivals && !rc)
                rc = bad("--arrivals", "poisson and/or constant", optarg);
            break;
        }
        case O_SEED:
            if (!(rc = parse_int("--seed", optarg, 0, INT64_MAX, &iv)))
                o->seed = (uint64_t)iv;
            break;
        case O_WARMUP:
            if (!(rc = parse_num("--warmup", optarg, 0, 3600, &dv)))
                o->warmup_s = dv;
            break;
        case O_WINDOW:
            if (!(rc = parse_num("--window", optarg, 0.05, 3600, &dv)))
                o->window_s = dv;
            break;
        case O_STABLE:
            if (!(rc = parse_int("--stable-windows", optarg, 1, FMB_MAX_WINDOWS, &iv)))
                o->stable_windows = (int)iv;
            break;
        case O_STABILITY:
            if (!(rc = parse_num("--stability", optarg, 0, 1000, &dv)))
                o->stability_pct = dv;
            break;
        case O_MAXWIN:
            if (!(rc = parse_int("--max-windows", optarg, 1, FMB_MAX_WINDOWS, &iv)))
                o->max_windows = (int)iv;
            break;
        case O_DRAIN:
            if (!(rc = parse_num("--drain-timeout", optarg, 0.1, 3600, &dv)))
                o->drain_timeout_s = dv;
            break;
        case O_MAXOUT:
            if (!(rc = parse_int("--max-outstanding", optarg, 1, 100000000, &iv)))
                o->max_outstanding = (uint64_t)iv;
            break;
        case O_LATLIM:
            if (!(rc = parse_num("--latency-limit", optarg, 0, 3.6e6, &dv)))
                o->latency_limit_ms = dv;
            break;
        case O_KEEP: o->keep_going = 1; break;
        case O_MINACC:
            if (!(rc = parse_num("--min-accuracy", optarg, 0, 1, &dv)))
                o->min_accuracy = dv;
            break;
        case O_MAXCHG:
            if (!(rc = parse_num("--max-changed", optarg, 0, 1, &dv)))
                o->max_changed = dv;
            break;
        case O_OUT: o->out_prefix = optarg; break;
        case O_JSON: o->json = optarg; break;
        case O_CSV: o->csv = optarg; break;
        case O_PLOT: o->plot = optarg; break;
        case O_TITLE: o->title = optarg; break;
        case O_TAG:
            if (!strchr(optarg, '=') || optarg[0] == '=')
                rc = bad("--tag", "expected KEY=VALUE", optarg);
            else if (o->ntags == FMB_MAX_TAGS)
                rc = bad("--tag", "at most 32 tags", optarg);
            else
                o->tags[o->ntags++] = optarg;
            break;
        case O_COMMIT: o->commit = optarg; break;
        case O_PROGRESS: o->progress = 1; break;
        case O_NOPROGRESS: o->progress = 0; break;
        case O_QUIET: o->quiet = 1; break;
        case 'h':
        case O_HELP: usage(stdout); exit(0);
        default: usage(stderr); return FMB_EXIT_USAGE;
        }
        if (rc)
            return rc;
    }
    if (optind < argc) {
        fprintf(stderr, "fmbench: unexpected argument '%s' (see --help)\n", argv[optind]);
        return FMB_EXIT_USAGE;
    }
    if (fm_client_parse_address(o->server, 7070, o->host, sizeof o->host, &o->port) != 0) {
        fprintf(stderr, "fmbench: --server: %s\n", fm_last_error());
        return FMB_EXIT_USAGE;
    }
    if (o->images_path && o->data_dir) {
        fprintf(stderr, "fmbench: give either --data or --images, not both\n");
        return FMB_EXIT_USAGE;
    }
    if (o->labels_path && !o->images_path) {
        fprintf(stderr, "fmbench: --labels goes with --images (a --data directory has its labels)\n");
        return FMB_EXIT_USAGE;
    }
    if (o->key && o->keys) {
        fprintf(stderr, "fmbench: give either --key or --keys, not both\n");
        return FMB_EXIT_USAGE;
    }
    if (o->max_windows < o->stable_windows) {
        fprintf(stderr, "fmbench: --max-windows (%d) must be at least --stable-windows (%d)\n", o->max_windows,
                o->stable_windows);
        return FMB_EXIT_USAGE;
    }
    if (o->nfractions && o->nconcurrency == 0) {
        fprintf(stderr, "fmbench: --rate-of-peak needs a closed-loop sweep (--concurrency) to find the peak\n");
        return FMB_EXIT_USAGE;
    }
    if (o->nconcurrency == 0 && o->nrates == 0) {
        o->nconcurrency = 1;
        o->concurrency[0] = 1;
    }
    if (o->nconcurrency + (o->nrates + o->nfractions) * o->narrivals > FMB_MAX_STEPS) {
        fprintf(stderr, "fmbench: more than %d steps in all\n", FMB_MAX_STEPS);
        return FMB_EXIT_USAGE;
    }
    return 0;
}

/* ---- Images ------------------------------------------------------------------------- */

static int load_images(const fmb_options_t *o, fmb_run_t *run) {
    fm_dataset_t *ds = &run->ds;
    int rc;
    if (o->images_path) {
        if ((rc = fm_dataset_load_images(o->images_path, ds)) != 0)
            return rc;
        snprintf(run->source, sizeof run->source, "%s", o->images_path);
        if (o->labels_path) {
            fm_idx_t lab;
            if ((rc = fm_idx_load(o->labels_path, 1, &lab)) != 0)
                return rc;
            if (lab.count != ds->n) {
                fm_idx_free(&lab);
                return fm_fail(FM_ESHAPE, "%s has %zu labels for the %zu images of %s", o->labels_path, lab.count,
                               ds->n, o->images_path);
            }
            for (size_t i = 0; i < lab.count; i++)
                if (lab.data[i] > 9) {
                    fm_idx_free(&lab);
                    return fm_fail(FM_EFORMAT, "%s: label %zu is %u, not 0..9", o->labels_path, i, lab.data[i]);
                }
            ds->labels = lab.data; /* fm_dataset_free frees it */
            lab.data = NULL;
            fm_idx_free(&lab);
            size_t used = strlen(run->source);
            snprintf(run->source + used, sizeof run->source - used, " with labels %s", o->labels_path);
        }
    } else {
        const char *dir = fm_data_dir(o->data_dir);
        if (!dir)
            return FM_EINVAL;
        if ((rc = fm_dataset_load(dir, o->split, ds)) != 0)
            return rc;
        snprintf(run->source, sizeof run->source, "%s (%s)", dir, o->split);
    }
    if (o->limit && o->limit < ds->n)
        ds->n = o->limit;
    run->labelled = ds->labels != NULL;
    return 0;
}

/* ---- The server's description --------------------------------------------------------- */

static char *call_json(fm_client_t *c, const char *method) {
    fm_mp_msg_t *msg = NULL;
    const fm_mp_obj_t *err = NULL, *res = NULL;
    if (fm_client_call(c, method, NULL, &msg, &err, &res) != 0)
        return NULL;
    char *text = NULL;
    if (err) {
        fm_proto_error_t e;
        fm_proto_read_error(err, &e);
        fm_fail(FM_EUNAVAILABLE, "%s: %s: %s", method, e.code, e.message);
    } else {
        text = fmb_mp_to_json_text(res);
    }
    fm_mp_msg_free(msg);
    return text;
}

/* Reads `models` (and `stats`) with the blocking client; *stats may be NULL. */
static int describe_server(const fmb_options_t *o, char **models, char **stats) {
    fm_client_t *c = NULL;
    int rc = fm_client_connect(o->host, o->port, 10000, &c);
    if (rc)
        return rc;
    if (o->token) {
        fm_proto_error_t e;
        if ((rc = fm_client_auth(c, o->token, &e)) != 0) {
            fm_client_close(c);
            return fm_fail(rc, "auth: %s: %s", e.code, e.message);
        }
    }
    if (models && !(*models = call_json(c, "models"))) {
        fm_client_close(c);
        return FM_EUNAVAILABLE;
    }
    if (stats && !(*stats = call_json(c, "stats"))) {
        fm_client_close(c);
        return FM_EUNAVAILABLE;
    }
    fm_client_close(c);
    return 0;
}

/* ---- Main ------------------------------------------------------------------------------ */

static void plan_steps(const fmb_options_t *o, fmb_run_t *run) {
    for (int i = 0; i < o->nconcurrency; i++) {
        fmb_step_t *s = &run->steps[run->nsteps++];
        s->mode = FMB_CLOSED;
        s->concurrency = o->concurrency[i];
    }
    for (int k = 0; k < o->narrivals; k++)
        for (int i = 0; i < o->nrates; i++) {
            fmb_step_t *s = &run->steps[run->nsteps++];
            s->mode = FMB_OPEN;
            s->target_rps = o->rates[i];
            s->arrivals = o->arrivals[k];
        }
    for (int k = 0; k < o->narrivals; k++)
        for (int i = 0; i < o->nfractions; i++) {
            fmb_step_t *s = &run->steps[run->nsteps++];
            s->mode = FMB_OPEN;
            s->rate_fraction = o->fractions[i];
            s->arrivals = o->arrivals[k];
        }
}

static void check_versions(fmb_run_t *run) {
    const fmb_options_t *o = run->o;
    for (int i = 0; i < run->nanswers; i++) {
        const fmb_answers_t *a = &run->answers[i];
        if (!run->labelled || a->covered == 0)
            continue;
        double acc = (double)a->correct / (double)a->covered;
        if (acc < o->min_accuracy && run->nfailures < 8) {
            snprintf(run->failures[run->nfailures++], sizeof run->failures[0],
                     "version %s (%s): accuracy %.4f over the %zu distinct images it answered is below "
                     "--min-accuracy %.4f",
                     a->version, a->role, acc, a->covered, o->min_accuracy);
            run->wrong = 1;
        }
    }
}

int main(int argc, char **argv) {
    static fmb_options_t o;
    int rc = parse_options(argc, argv, &o);
    if (rc)
        return rc;
    signal(SIGPIPE, SIG_IGN);
    static fmb_run_t run;
    run.o = &o;
    time_t now = time(NULL);
    strftime(run.date, sizeof run.date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    if (getloadavg(run.load_start, 3) < 0)
        memset(run.load_start, 0, sizeof run.load_start);
    if (load_images(&o, &run) != 0) {
        fprintf(stderr, "fmbench: images: %s\n", fm_last_error());
        return FMB_EXIT_FAILED;
    }
    if ((size_t)o.batch > run.ds.n && !o.quiet)
        fprintf(stderr, "fmbench: note: %d images per request from a set of %zu: images repeat within a request\n",
                o.batch, run.ds.n);
    if (describe_server(&o, &run.models_json, &run.stats_start_json) != 0) {
        fprintf(stderr, "fmbench: server %s: %s\n", o.server, fm_last_error());
        fm_dataset_free(&run.ds);
        return FMB_EXIT_FAILED;
    }
    plan_steps(&o, &run);
    if (!o.quiet)
        fmb_print_header(&run);

    rc = fmb_load_run(&run);

    if (getloadavg(run.load_end, 3) < 0)
        memset(run.load_end, 0, sizeof run.load_end);
    if (describe_server(&o, NULL, &run.stats_end_json) != 0 && !run.fatal[0])
        fprintf(stderr, "fmbench: note: the server's stats after the run could not be read: %s\n", fm_last_error());
    check_versions(&run);
    if (!o.quiet)
        fmb_print_summary(&run);

    int out_failed = 0;
    const char *json = o.json, *csv = o.csv, *plot = o.plot;
    char pj[1100], pc[1100], pp[1100];
    if (o.out_prefix) {
        snprintf(pj, sizeof pj, "%s.json", o.out_prefix);
        snprintf(pc, sizeof pc, "%s.csv", o.out_prefix);
        snprintf(pp, sizeof pp, "%s.png", o.out_prefix);
        json = json ? json : pj;
        csv = csv ? csv : pc;
        plot = plot ? plot : pp;
    }
    if (json && fmb_write_json(&run, json) != 0) {
        fprintf(stderr, "fmbench: %s\n", fm_last_error());
        out_failed = 1;
    }
    if (csv && fmb_write_csv(&run, csv) != 0) {
        fprintf(stderr, "fmbench: %s\n", fm_last_error());
        out_failed = 1;
    }
    if (plot && fmb_write_plot(&run, plot) < 0) {
        fprintf(stderr, "fmbench: plot: %s\n", fm_last_error());
        out_failed = 1;
    }

    int code = FMB_EXIT_OK;
    if (run.wrong) {
        fprintf(stderr, "fmbench: FAILED: wrong answers; these figures are not valid:\n");
        for (int i = 0; i < run.nfailures; i++)
            fprintf(stderr, "  %s\n", run.failures[i]);
        code = FMB_EXIT_WRONG;
    } else if (run.interrupted) {
        fprintf(stderr, "fmbench: interrupted; the steps finished so far are reported\n");
        code = FMB_EXIT_INTERRUPTED;
    } else if (rc != 0 || run.fatal[0]) {
        fprintf(stderr, "fmbench: FAILED: %s\n", run.fatal[0] ? run.fatal : fm_last_error());
        code = FMB_EXIT_FAILED;
    } else if (out_failed) {
        code = FMB_EXIT_FAILED;
    }
    for (int i = 0; i < run.nsteps; i++)
        if (run.steps[i].ran)
            fmb_acc_free(&run.steps[i].acc);
    for (int i = 0; i < run.nanswers; i++)
        free(run.answers[i].label);
    free(run.models_json);
    free(run.stats_start_json);
    free(run.stats_end_json);
    fm_dataset_free(&run.ds);
    return code;
}
