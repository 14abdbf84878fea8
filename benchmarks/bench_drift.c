/* bench_drift.c: how long a drift check takes over a realistic window, and
 * how fast the prediction log ingests. Logs --predictions rows (default
 * 1,000,000) over --minutes (60) with --sampled (100,000) of them sampled,
 * through the same COPY rows and rollup deltas the server's writer sends,
 * then times fm_drift_run() over the window --repeats times.
 *
 * Images are the real Fashion-MNIST (reference: the training set; traffic:
 * the test set, each later pass over it with a few pixels nudged by one so
 * that every sampled image is distinct, as real traffic would be) from
 * --data or $FM_DATA. Predictions are synthetic (the true
 * label and a float32 confidence drawn uniformly from [0.35, 1), which makes
 * nearly every confidence distinct: the expensive case for Wasserstein on
 * the raw values); the check's cost does not depend on where they came from.
 * Use a database of its own: benchmarks/drift-check.sh starts a throwaway one. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "bench_machine.h"
#include "fm_db.h"
#include "fm_drift.h"
#include "fm_error.h"
#include "fm_idx.h"
#include "fm_migrate.h"
#include "fm_rows.h"
#include "fm_store_sync.h"
#include "fm_time.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint32_t rng(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int die(const char *what) {
    fprintf(stderr, "bench_drift: %s: %s\n", what, fm_last_error());
    return 1;
}

int main(int argc, char **argv) {
    const char *url_flag = NULL, *data_flag = NULL, *json_path = NULL;
    long npred = 1000000, nsampled = 100000, minutes = 60, repeats = 5, batch = 10000;
    static const struct option opts[] = {{"database-url", required_argument, 0, 'u'},
                                         {"data", required_argument, 0, 'd'},
                                         {"predictions", required_argument, 0, 'p'},
                                         {"sampled", required_argument, 0, 's'},
                                         {"minutes", required_argument, 0, 'm'},
                                         {"repeats", required_argument, 0, 'r'},
                                         {"batch", required_argument, 0, 'b'},
                                         {"json", required_argument, 0, 'j'},
                                         {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "u:d:p:s:m:r:b:j:", opts, NULL)) != -1) {
        switch (c) {
        case 'u': url_flag = optarg; break;
        case 'd': data_flag = optarg; break;
        case 'p': npred = atol(optarg); break;
        case 's': nsampled = atol(optarg); break;
        case 'm': minutes = atol(optarg); break;
        case 'r': repeats = atol(optarg); break;
        case 'b': batch = atol(optarg); break;
        case 'j': json_path = optarg; break;
        default:
            fprintf(stderr, "usage: bench_drift [--database-url URL] [--data DIR] [--predictions N] [--sampled N]\n"
                            "                   [--minutes M] [--repeats R] [--batch N] [--json FILE]\n");
            return 2;
        }
    }
    if (npred < 1 || nsampled < 1 || nsampled > npred || minutes < 1 || repeats < 1 || batch < 1) {
        fprintf(stderr, "bench_drift: need 1 <= sampled <= predictions, minutes, repeats, batch >= 1\n");
        return 2;
    }
    const char *url = fm_db_url(url_flag);
    const char *data = fm_data_dir(data_flag);
    if (!url || !data)
        return die("setup");
    fm_dataset_t train = {0}, test = {0};
    if (fm_dataset_load(data, "train", &train) != 0 || fm_dataset_load(data, "t10k", &test) != 0)
        return die("loading Fashion-MNIST");
    fm_db_t *db;
    if (fm_db_connect(url, &db) != 0)
        return die("connecting");
    fm_migrate_result_t mres;
    if (fm_migrate_all(db, &mres) != 0)
        return die("migrating");

    /* Reference: the training set with synthetic predictions. */
    int32_t *labels = malloc(train.n * sizeof *labels);
    float *conf = malloc(train.n * sizeof *conf);
    for (size_t i = 0; i < train.n; i++) {
        labels[i] = train.labels[i];
        conf[i] = 0.35f + 0.65f * (float)(rng() & 0xffffff) / 16777216.0f;
    }
    fm_drift_reference_info_t info = {.description = "bench_drift", .data_source = train.images_path,
                                      .data_sha256 = train.sha256, .model_name = "synthetic", .model_version = "v1"};
    int64_t ref_id;
    uint64_t t0 = fm_now_ns();
    if (fm_drift_reference_store(db, &info, train.images, train.n, labels, conf, &ref_id) != 0)
        return die("storing the reference");
    double ref_s = (double)(fm_now_ns() - t0) / 1e9;

    /* Traffic: a window of whole minutes ending 30 minutes ago. */
    int64_t now = fm_wall_us();
    int64_t t_end = fm_pixel_bucket_start_us(now) - 30 * FM_PIXEL_BUCKET_US;
    int64_t t_start = t_end - minutes * FM_PIXEL_BUCKET_US;
    int64_t span = t_end - t_start;
    fm_prediction_row_t *rows = calloc((size_t)batch, sizeof *rows);
    const uint8_t **imgs = calloc((size_t)batch, sizeof *imgs);
    uint8_t *pix = malloc((size_t)batch * 784);
    fm_store_writer_t *writer;
    if (!rows || !imgs || !pix || fm_store_writer_new(db, 1, &writer) != 0)
        return die("allocating");
    long every = npred / nsampled;
    long logged = 0, sampled = 0;
    t0 = fm_now_ns();
    for (long off = 0; off < npred; off += batch) {
        long n = npred - off < batch ? npred - off : batch;
        for (long k = 0; k < n; k++) {
            long i = off + k;
            fm_prediction_row_t *r = &rows[k];
            size_t img = (size_t)i % test.n;
            r->image_index = 0;
            r->ts_us = t_start + (int64_t)((double)i / (double)npred * (double)span);
            fm_uuid7_make(r->ts_us / 1000, 0, 1000000000ULL + (uint64_t)i, r->request_id);
            r->role = i % 10 == 0 ? FM_ROLE_CANARY : FM_ROLE_STABLE;
            r->model_version = "v1";
            r->route = FM_ROUTE_AB;
            r->label = test.labels[img];
            r->confidence = 0.35f + 0.65f * (float)(rng() & 0xffffff) / 16777216.0f;
            float rest = (1.0f - r->confidence) / 9.0f;
            for (int j = 0; j < 10; j++)
                r->probs[j] = j == r->label ? r->confidence : rest;
            r->queue_us = 200 + rng() % 800;
            r->compute_us = 300 + rng() % 300;
            r->total_us = r->queue_us + r->compute_us + 50;
            imgs[k] = NULL;
            if (i % every == 0 && sampled < nsampled) {
                /* Pass `cycle` over the test set nudges three pixels. */
                size_t base = (size_t)sampled % test.n, cycle = (size_t)sampled / test.n;
                uint8_t *dst = pix + k * 784;
                memcpy(dst, test.images + base * 784, 784);
                for (size_t t = 0; cycle && t < 3; t++) {
                    size_t p = (cycle * 131 + t * 257 + base) % 784;
                    dst[p] = dst[p] < 255 ? dst[p] + 1 : 254;
                }
                imgs[k] = dst;
                sampled++;
            }
        }
        if (fm_store_writer_write(writer, rows, (size_t)n, imgs) != 0)
            return die("logging a batch");
        logged += n;
    }
    if (fm_store_writer_flush(writer) != 0)
        return die("flushing the rollups");
    double ingest_s = (double)(fm_now_ns() - t0) / 1e9;

    /* Predictions alone (no sampled inputs), in a separate version: the
     * COPY path the writer takes for most rows. */
    long nplain = npred < 200000 ? npred : 200000;
    t0 = fm_now_ns();
    for (long off = 0; off < nplain; off += batch) {
        long n = nplain - off < batch ? nplain - off : batch;
        for (long k = 0; k < n; k++) {
            fm_uuid7_make(rows[k].ts_us / 1000, 1, 5000000000ULL + (uint64_t)(off + k), rows[k].request_id);
            rows[k].model_version = "copy-only";
        }
        if (fm_store_writer_write(writer, rows, (size_t)n, NULL) != 0)
            return die("logging predictions");
    }
    double plain_s = (double)(fm_now_ns() - t0) / 1e9;
    if (fm_db_exec(db, "ANALYZE") != 0)
        return die("ANALYZE");

    char since[40], until[40];
    fm_rows_timestamp(since, sizeof since, t_start);
    fm_rows_timestamp(until, sizeof until, t_end);
    double *times = calloc((size_t)repeats, sizeof *times);
    int64_t run_id = 0;
    for (long k = 0; k < repeats; k++) {
        fm_drift_check_opts_t o;
        fm_drift_check_opts_default(&o);
        o.since = since;
        o.until = until;
        o.model_version = "v1";
        o.reference_id = ref_id;
        t0 = fm_now_ns();
        if (fm_drift_check(db, &o, &run_id) != 0)
            return die("drift check");
        times[k] = (double)(fm_now_ns() - t0) / 1e9;
        fprintf(stderr, "bench_drift: check %ld: %.3f s (run #%lld)\n", k + 1, times[k], (long long)run_id);
    }
    qsort(times, (size_t)repeats, sizeof *times, cmp_double);
    fm_drift_run_t *run;
    if (fm_drift_run_load(db, run_id, &run) != 0)
        return die("reading the run");

    struct utsname u;
    uname(&u);
    char cpu[256];
    bench_cpu_model(cpu, sizeof cpu);
    char commit[128];
    bench_commit(commit, sizeof commit);
    char date[40];
    fm_rows_timestamp(date, sizeof date, fm_wall_us());
    fm_db_result_t *vres;
    const char *pgv = "unknown";
    if (fm_db_query(db, "SHOW server_version", 0, NULL, &vres) == 0)
        pgv = fm_db_result_value(vres, 0, 0);
    char json[4096];
    snprintf(json, sizeof json,
             "{\"benchmark\":\"drift_check\",\"date\":\"%s\",\"commit\":\"%s\",\"machine\":{\"cpu\":\"%s\","
             "\"cores\":%ld,\"kernel\":\"%s %s\"},\"postgresql\":\"%s\",\"predictions\":%ld,\"sampled\":%ld,"
             "\"minutes\":%ld,\"reference_images\":%zu,\"reference_store_s\":%.3f,"
             "\"ingest\":{\"rows\":%ld,\"seconds\":%.3f,\"rows_per_s\":%.0f,\"sampled_share\":%.3f},"
             "\"copy_only\":{\"rows\":%ld,\"seconds\":%.3f,\"rows_per_s\":%.0f},"
             "\"check_s\":{\"min\":%.3f,\"median\":%.3f,\"max\":%.3f,\"repeats\":%ld},"
             "\"run\":{\"features\":%d,\"drifted\":%d,\"share\":%.4f,\"dataset_drift\":%s}}",
             date, commit, cpu, sysconf(_SC_NPROCESSORS_ONLN), u.sysname, u.release, pgv, npred, sampled,
             minutes, train.n, ref_s, logged, ingest_s, (double)logged / ingest_s, (double)sampled / (double)logged,
             nplain, plain_s, (double)nplain / plain_s, times[0], times[repeats / 2], times[repeats - 1], repeats,
             run->features, run->drifted, run->share, run->dataset_drift ? "true" : "false");
    printf("%s\n", json);
    if (json_path) {
        FILE *f = fopen(json_path, "w");
        if (f) {
            fprintf(f, "%s\n", json);
            fclose(f);
        }
    }
    fprintf(stderr,
            "bench_drift: %ld predictions (%ld sampled) logged at %.0f rows/s; predictions alone at %.0f rows/s;\n"
            "             drift check over %ld min: median %.3f s (min %.3f, max %.3f); %d/%d features drifted\n",
            logged, sampled, (double)logged / ingest_s, (double)nplain / plain_s, minutes, times[repeats / 2],
            times[0], times[repeats - 1], run->drifted, run->features);
    fm_drift_run_free(run);
    free(times);
    fm_store_writer_free(writer);
    free(rows);
    free(imgs);
    free(pix);
    free(labels);
    free(conf);
    fm_db_close(db);
    fm_dataset_free(&train);
    fm_dataset_free(&test);
    return 0;
}
