/* cmd_drift.c: `fmctl drift reference` (a reference profile from a training
 * set and a model) and `fmctl drift check` (a drift check over logged
 * traffic, run inside PostgreSQL; exit code 3 on dataset drift). */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_backend.h"
#include "fm_cli.h"
#include "fm_db.h"
#include "fm_drift.h"
#include "fm_drift_report.h"
#include "fm_error.h"
#include "fm_idx.h"
#include "fm_model.h"
#include "fm_time.h"

static void reference_usage(FILE *f) {
    fprintf(f, "usage: fmctl drift reference --model DIR [--data DIR] [--split train|t10k] [--limit N]\n"
               "                             [--description TEXT] [--backend cpu|auto|cuda] [--threads N]\n"
               "                             [--database-url URL]\n"
               "  Computes a drift reference profile from a data set (default: the 60,000 training images in\n"
               "  --data or $FM_DATA): per-pixel 256-bin histograms, the summary features, and the model's\n"
               "  predicted class and confidence on every image; stores it and prints its id.\n"
               "  --limit N  use only the first N images (a reference of <= 1000 images selects K-S,\n"
               "             chi-square and z tests instead of Wasserstein and Jensen-Shannon)\n");
}

static int parse_int(const char *cmd, const char *flag, const char *s, long lo, long hi, long *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) {
        fprintf(stderr, "fmctl %s: %s must be %ld..%ld, got '%s'\n", cmd, flag, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_double(const char *cmd, const char *flag, const char *s, double lo, double hi, double *out) {
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "fmctl %s: %s must be a number in [%g, %g], got '%s'\n", cmd, flag, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

int fm_cmd_drift_reference(int argc, char **argv) {
    const char *model_dir = NULL, *data_flag = NULL, *split = "train", *backend = "cpu", *url_flag = NULL;
    const char *description = NULL;
    long limit = 0, threads = 0;
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},   {"data", required_argument, 0, 'd'},
        {"split", required_argument, 0, 's'},   {"limit", required_argument, 0, 'n'},
        {"description", required_argument, 0, 'D'}, {"backend", required_argument, 0, 'b'},
        {"threads", required_argument, 0, 't'}, {"database-url", required_argument, 0, 'u'},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:d:s:n:D:b:t:u:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_dir = optarg; break;
        case 'd': data_flag = optarg; break;
        case 's': split = optarg; break;
        case 'n':
            if (parse_int("drift reference", "--limit", optarg, 1, 100000000, &limit))
                return 2;
            break;
        case 'D': description = optarg; break;
        case 'b': backend = optarg; break;
        case 't':
            if (parse_int("drift reference", "--threads", optarg, 0, 1024, &threads))
                return 2;
            break;
        case 'u': url_flag = optarg; break;
        case 'h': reference_usage(stdout); return 0;
        default: reference_usage(stderr); return 2;
        }
    }
    if (!model_dir || optind < argc) {
        reference_usage(stderr);
        return 2;
    }
    const char *data_dir = fm_data_dir(data_flag);
    const char *url = fm_db_url(url_flag);
    if (!data_dir || !url)
        return fm_cli_fail("drift reference");

    fm_model_t *model = NULL;
    fm_dataset_t ds = {0};
    fm_engine_t engine = {0};
    fm_backend_model_t *bm = NULL;
    fm_db_t *db = NULL;
    int32_t *labels = NULL;
    float *conf = NULL;
    int rc = 1;
    uint64_t t0 = fm_now_ns();
    if (fm_model_load(model_dir, &model) != 0) {
        fm_cli_fail("drift reference: loading the model");
        goto done;
    }
    if (fm_dataset_load(data_dir, split, &ds) != 0) {
        fm_cli_fail("drift reference: loading the data");
        goto done;
    }
    size_t n = ds.n;
    if (limit > 0 && (size_t)limit < n)
        n = (size_t)limit;
    fm_backend_config_t cfg;
    fm_backend_config_default(&cfg);
    cfg.threads = (int)threads;
    if (fm_engine_open(backend, &cfg, &engine) != 0 || fm_engine_prepare(&engine, model, &bm) != 0) {
        fm_cli_fail("drift reference: preparing the engine");
        goto done;
    }
    labels = malloc(n * sizeof *labels);
    conf = malloc(n * sizeof *conf);
    if (!labels || !conf) {
        fprintf(stderr, "fmctl drift reference: out of memory\n");
        goto done;
    }
    if (fm_drift_predict(&engine, bm, ds.images, n, labels, conf, NULL) != 0) {
        fm_cli_fail("drift reference: inference");
        goto done;
    }
    if (fm_db_connect(url, &db) != 0) {
        fm_cli_fail("drift reference");
        goto done;
    }
    char desc[512];
    if (!description) {
        snprintf(desc, sizeof desc, "%s split%s", split, n < ds.n ? ", first images only" : "");
        description = desc;
    }
    fm_drift_reference_info_t info = {
        .description = description,
        .data_source = ds.images_path,
        .data_sha256 = ds.sha256,
        .model_name = fm_model_name(model),
        .model_version = fm_model_version(model),
        .model_sha256 = fm_model_weights_sha256(model),
    };
    int64_t id;
    if (fm_drift_reference_store(db, &info, ds.images, n, labels, conf, &id) != 0) {
        fm_cli_fail("drift reference");
        goto done;
    }
    printf("reference profile #%lld: %zu images of %s, model %s %s (%.1f s)\n", (long long)id, n, ds.images_path,
           fm_model_name(model), fm_model_version(model), (double)(fm_now_ns() - t0) / 1e9);
    rc = 0;
done:
    fm_db_close(db);
    free(labels);
    free(conf);
    if (bm)
        fm_engine_release(&engine, bm);
    if (engine.ops)
        fm_engine_close(&engine);
    fm_dataset_free(&ds);
    fm_model_free(model);
    return rc;
}

static void check_usage(FILE *f) {
    fprintf(f,
            "usage: fmctl drift check [--since TIME] [--until TIME] [--window INTERVAL] [--version V]\n"
            "                         [--reference ID|latest] [--top N] [--html FILE] [--json]\n"
            "                         [--num-stattest T] [--cat-stattest T] [--num-threshold X]\n"
            "                         [--cat-threshold X] [--drift-share X] [--no-compact] [--show RUN]\n"
            "                         [--database-url URL]\n"
            "  Compares the logged traffic of a time window (default: the last hour; --since/--until take\n"
            "  any PostgreSQL timestamp, --window any interval such as 1h or '30 min') with a reference\n"
            "  profile, with Evidently's DataDriftPreset tests, inside PostgreSQL. Prints the share of\n"
            "  drifted features and the top N (default 10); --json prints every feature as JSON instead;\n"
            "  --html writes a self-contained report. Before checking, rollup buckets are compacted\n"
            "  (fm_rollup_compact; --no-compact skips it). --show RUN prints a stored run instead.\n"
            "  Exit status: 0 no dataset drift, 3 dataset drift, 1 error (also an empty window), 2 usage.\n");
}

int fm_cmd_drift_check(int argc, char **argv) {
    fm_drift_check_opts_t o;
    fm_drift_check_opts_default(&o);
    const char *url_flag = NULL, *html = NULL;
    long top = 10, show = 0;
    int json = 0, compact = 1;
    static const struct option opts[] = {
        {"since", required_argument, 0, 'S'},         {"until", required_argument, 0, 'U'},
        {"window", required_argument, 0, 'w'},        {"version", required_argument, 0, 'v'},
        {"reference", required_argument, 0, 'r'},     {"top", required_argument, 0, 'n'},
        {"html", required_argument, 0, 'H'},          {"json", no_argument, 0, 'j'},
        {"num-stattest", required_argument, 0, 'a'},  {"cat-stattest", required_argument, 0, 'b'},
        {"num-threshold", required_argument, 0, 'A'}, {"cat-threshold", required_argument, 0, 'B'},
        {"drift-share", required_argument, 0, 's'},   {"no-compact", no_argument, 0, 'C'},
        {"show", required_argument, 0, 'R'},          {"database-url", required_argument, 0, 'u'},
        {"help", no_argument, 0, 'h'},                {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "S:U:w:v:r:n:H:ja:b:A:B:s:CR:u:h", opts, NULL)) != -1) {
        switch (c) {
        case 'S': o.since = optarg; break;
        case 'U': o.until = optarg; break;
        case 'w': o.window = optarg; break;
        case 'v': o.model_version = optarg; break;
        case 'r':
            if (strcmp(optarg, "latest") == 0) {
                o.reference_id = 0;
            } else {
                long v;
                if (parse_int("drift check", "--reference", optarg, 1, 9000000000000000000L, &v))
                    return 2;
                o.reference_id = v;
            }
            break;
        case 'n':
            if (parse_int("drift check", "--top", optarg, 0, 100000, &top))
                return 2;
            break;
        case 'H': html = optarg; break;
        case 'j': json = 1; break;
        case 'a': o.num_stattest = optarg; break;
        case 'b': o.cat_stattest = optarg; break;
        case 'A':
            if (parse_double("drift check", "--num-threshold", optarg, 0, 1e300, &o.num_threshold))
                return 2;
            break;
        case 'B':
            if (parse_double("drift check", "--cat-threshold", optarg, 0, 1e300, &o.cat_threshold))
                return 2;
            break;
        case 's':
            if (parse_double("drift check", "--drift-share", optarg, 1e-9, 1, &o.drift_share))
                return 2;
            break;
        case 'C': compact = 0; break;
        case 'R':
            if (parse_int("drift check", "--show", optarg, 1, 9000000000000000000L, &show))
                return 2;
            break;
        case 'u': url_flag = optarg; break;
        case 'h': check_usage(stdout); return 0;
        default: check_usage(stderr); return 2;
        }
    }
    if (optind < argc || (o.since && o.window)) {
        if (o.since && o.window)
            fprintf(stderr, "fmctl drift check: give --since or --window, not both\n");
        check_usage(stderr);
        return 2;
    }
    const char *url = fm_db_url(url_flag);
    if (!url)
        return fm_cli_fail("drift check");
    fm_db_t *db;
    if (fm_db_connect(url, &db) != 0)
        return fm_cli_fail("drift check");
    int rc = 1;
    int64_t run_id = show;
    fm_drift_run_t *run = NULL;
    /* Compaction keeps long windows cheap: 60 s buckets older than 2 h
     * become hourly ones, hourly ones older than 2 days daily ones. */
    if (!show && compact &&
        fm_db_exec(db, "SELECT fm_rollup_compact('1 hour', '2 hours'), fm_rollup_compact('1 day', '2 days')") != 0) {
        fm_cli_fail("drift check: compacting rollups");
        goto done;
    }
    if (!show && fm_drift_check(db, &o, &run_id) != 0) {
        fm_cli_fail("drift check");
        goto done;
    }
    if (fm_drift_run_load(db, run_id, &run) != 0) {
        fm_cli_fail("drift check: reading the results");
        goto done;
    }
    if (json) {
        if (fm_drift_report_json(stdout, run) != 0) {
            fm_cli_fail("drift check");
            goto done;
        }
    } else {
        fm_drift_report_text(stdout, run, (int)top);
    }
    if (html) {
        if (fm_drift_report_html(html, run, (int)(top > 0 ? top : 10)) != 0) {
            fm_cli_fail("drift check: writing the HTML report");
            goto done;
        }
        if (!json)
            printf("\nreport written to %s\n", html);
    }
    rc = run->dataset_drift ? FM_DRIFT_EXIT_DRIFT : 0;
done:
    fm_drift_run_free(run);
    fm_db_close(db);
    return rc;
}
