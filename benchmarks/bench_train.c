/* bench_train.c: the trainer's speed: seconds per training epoch for the MLP
 * (v1) and the CNN (v2), with the shipped models' settings.
 *
 * Trains --epochs epochs on the first --images training images (default all
 * of them) and reports, per model, every epoch's training seconds (validation
 * excluded), the median, images/s, and the median scaled to the 60,000 images
 * of a full epoch. The first epoch includes one-time costs (oneDNN JIT), which
 * is why the median of several is the figure to quote. Pixels are the real
 * training images from --data or $FM_DATA, else random bytes (speed does not
 * depend on them). */
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>

#include "bench_machine.h"
#include "fm_error.h"
#include "fm_idx.h"
#include "fm_model.h"
#include "fm_train.h"

#define MAX_EPOCHS 64
#define FULL_EPOCH 60000.0

typedef struct options {
    int threads, epochs, batch;
    size_t images;
    int models[2];
    const char *data, *json;
} options_t;

static void usage(FILE *f) {
    fprintf(f, "usage: bench_train [--models mlp,cnn] [--epochs E] [--images N] [--batch-size B] [--threads T]\n"
               "                   [--data DIR] [--json FILE]\n"
               "  --epochs E      epochs per model; the median is reported (default 3)\n"
               "  --images N      train on the first N images and scale to 60,000 (default: all)\n"
               "  --batch-size B  images per step (default 128, as the shipped models)\n"
               "  --threads T     0 = every core (default 0)\n"
               "  --data DIR      training images from DIR (default $FM_DATA, else random pixels)\n"
               "  --json FILE     write the results as JSON\n");
}

static int parse_int(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, options_t *o) {
    static const struct option longopts[] = {
        {"models", required_argument, 0, 'm'}, {"epochs", required_argument, 0, 'e'},
        {"images", required_argument, 0, 'n'}, {"batch-size", required_argument, 0, 'b'},
        {"threads", required_argument, 0, 't'}, {"data", required_argument, 0, 'd'},
        {"json", required_argument, 0, 'j'},   {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    o->epochs = 3;
    o->batch = 128;
    o->models[0] = o->models[1] = 1;
    int c;
    long v;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'm':
            o->models[0] = strstr(optarg, "mlp") != NULL;
            o->models[1] = strstr(optarg, "cnn") != NULL;
            if (!o->models[0] && !o->models[1]) {
                fprintf(stderr, "bench_train: --models wants mlp, cnn or mlp,cnn\n");
                return 2;
            }
            break;
        case 'e':
            if (parse_int(optarg, 1, MAX_EPOCHS, &v)) {
                fprintf(stderr, "bench_train: --epochs must be 1..%d\n", MAX_EPOCHS);
                return 2;
            }
            o->epochs = (int)v;
            break;
        case 'n':
            if (parse_int(optarg, 1, 60000, &v)) {
                fprintf(stderr, "bench_train: --images must be 1..60000\n");
                return 2;
            }
            o->images = (size_t)v;
            break;
        case 'b':
            if (parse_int(optarg, 1, 65536, &v)) {
                fprintf(stderr, "bench_train: --batch-size must be 1..65536\n");
                return 2;
            }
            o->batch = (int)v;
            break;
        case 't':
            if (parse_int(optarg, 0, 1024, &v)) {
                fprintf(stderr, "bench_train: --threads must be 0..1024\n");
                return 2;
            }
            o->threads = (int)v;
            break;
        case 'd': o->data = optarg; break;
        case 'j': o->json = optarg; break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct epochs_log {
    double seconds[MAX_EPOCHS]; /* training seconds, validation excluded */
    double ips[MAX_EPOCHS];
    int n;
} epochs_log_t;

static int on_epoch(const fm_train_epoch_stats_t *s, void *user) {
    epochs_log_t *log = user;
    if (log->n < MAX_EPOCHS) {
        log->ips[log->n] = s->images_per_s;
        log->seconds[log->n] = s->images_per_s > 0 ? (double)s->train_images / s->images_per_s : 0;
        log->n++;
    }
    printf("  epoch %d/%d: %.2f s, %.0f images/s, loss %.4f\n", s->epoch, s->epochs, log->seconds[log->n - 1],
           s->images_per_s, s->loss);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    options_t o;
    int prc = parse_args(argc, argv, &o);
    if (prc)
        return prc;

    fm_dataset_t ds = {0};
    const char *dir = o.data ? o.data : getenv("FM_DATA");
    char pixels_from[600];
    if (dir && *dir) {
        if (fm_dataset_load(dir, "train", &ds) != 0) {
            fprintf(stderr, "bench_train: %s\n", fm_last_error());
            return 1;
        }
        snprintf(pixels_from, sizeof pixels_from, "training images from %s", dir);
    } else {
        /* Random pixels and labels: the same work per image as real ones. */
        ds.n = 60000;
        ds.images = malloc(ds.n * FM_IMAGE_PIXELS);
        ds.labels = malloc(ds.n);
        if (!ds.images || !ds.labels) {
            fprintf(stderr, "bench_train: out of memory\n");
            return 1;
        }
        uint64_t s = 88172645463325252ull;
        for (size_t i = 0; i < ds.n * FM_IMAGE_PIXELS; i++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            ds.images[i] = (uint8_t)s;
        }
        for (size_t i = 0; i < ds.n; i++)
            ds.labels[i] = (uint8_t)(i % FM_NUM_CLASSES);
        snprintf(pixels_from, sizeof pixels_from, "random pixels (no --data or FM_DATA)");
    }
    if (o.images && o.images < ds.n)
        ds.n = o.images;

    char cpu[256], commit[128], date[64];
    bench_cpu_model(cpu, sizeof cpu);
    bench_commit(commit, sizeof commit);
    time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    double load[3] = {0, 0, 0};
    if (getloadavg(load, 3) < 0)
        load[0] = -1;
    printf("fmserve trainer benchmark\n");
    printf("machine: %s, %ld cores online, load average %.2f\n", cpu, cores, load[0]);
    printf("date:    %s   commit: %s\n", date, commit);
    /* Idle OpenMP threads spin unless told to sleep; on a shared machine that
     * costs up to half the throughput, so the setting goes with the figures. */
    const char *wait = getenv("OMP_WAIT_POLICY");
    wait = wait && *wait ? wait : "default (spin, then sleep)";
    printf("work:    %d epochs of %zu images per model, batch %d, threads %d (0 = every core); %s\n", o.epochs, ds.n,
           o.batch, o.threads, pixels_from);
    printf("openmp:  OMP_WAIT_POLICY %s\n\n", wait);

    cJSON *root = cJSON_CreateObject();
    cJSON *machine = cJSON_AddObjectToObject(root, "machine");
    cJSON_AddStringToObject(machine, "cpu", cpu);
    cJSON_AddNumberToObject(machine, "cores", (double)cores);
    cJSON_AddNumberToObject(machine, "load_average", load[0]);
    cJSON_AddStringToObject(root, "date", date);
    cJSON_AddStringToObject(root, "commit", commit);
    cJSON_AddNumberToObject(root, "threads", o.threads);
    cJSON_AddNumberToObject(root, "batch_size", o.batch);
    cJSON_AddNumberToObject(root, "images", (double)ds.n);
    cJSON_AddStringToObject(root, "pixels", pixels_from);
    cJSON_AddStringToObject(root, "omp_wait_policy", wait);
    cJSON *results = cJSON_AddArrayToObject(root, "results");

    int failed = 0;
    for (int a = 0; a < 2; a++) {
        if (!o.models[a])
            continue;
        fm_arch_t arch = a == 0 ? FM_ARCH_MLP : FM_ARCH_CNN;
        fm_train_config_t cfg;
        fm_train_config_default(&cfg, arch);
        cfg.epochs = o.epochs;
        cfg.batch_size = o.batch;
        cfg.threads = o.threads;
        cfg.val_split = 0;
        epochs_log_t log = {0};
        cfg.on_epoch = on_epoch;
        cfg.user = &log;
        fm_model_t *m = fm_model_new(arch);
        fm_train_result_t r;
        printf("%s (%s), %.1f MFLOP forward per image:\n", fm_arch_name(arch), fm_arch_summary(arch),
               fm_arch_flops(arch) / 1e6);
        if (!m || fm_train_run(&cfg, &ds, m, &r) != 0) {
            fprintf(stderr, "bench_train: %s: %s\n", fm_arch_name(arch), fm_last_error());
            fm_model_free(m);
            failed = 1;
            continue;
        }
        double sorted[MAX_EPOCHS];
        memcpy(sorted, log.seconds, sizeof(double) * (size_t)log.n);
        qsort(sorted, (size_t)log.n, sizeof(double), cmp_double);
        double median = log.n % 2 ? sorted[log.n / 2] : 0.5 * (sorted[log.n / 2 - 1] + sorted[log.n / 2]);
        double ips = median > 0 ? (double)r.train_images / median : 0;
        double full = ips > 0 ? FULL_EPOCH / ips : 0;
        /* Training costs about three forward passes (forward, and backward's two GEMMs per layer). */
        double gflops = ips * 3.0 * fm_arch_flops(arch) / 1e9;
        printf("  median %.2f s per epoch of %zu images = %.0f images/s (~%.1f GFLOP/s); "
               "%.1f s per 60,000-image epoch, %d threads\n\n",
               median, r.train_images, ips, gflops, full, r.threads);
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", fm_arch_name(arch));
        cJSON_AddNumberToObject(j, "threads", r.threads);
        cJSON_AddNumberToObject(j, "images_per_epoch", (double)r.train_images);
        cJSON *arr = cJSON_AddArrayToObject(j, "epoch_seconds");
        for (int i = 0; i < log.n; i++)
            cJSON_AddItemToArray(arr, cJSON_CreateNumber(log.seconds[i]));
        cJSON_AddNumberToObject(j, "median_epoch_seconds", median);
        cJSON_AddNumberToObject(j, "images_per_second", ips);
        cJSON_AddNumberToObject(j, "seconds_per_60000_image_epoch", full);
        cJSON_AddNumberToObject(j, "approx_gflops", gflops);
        cJSON_AddItemToArray(results, j);
        fm_model_free(m);
    }

    if (o.json) {
        char *text = cJSON_Print(root);
        FILE *f = fopen(o.json, "w");
        if (!f || fputs(text, f) < 0 || fputc('\n', f) == EOF) {
            fprintf(stderr, "bench_train: cannot write %s: %s\n", o.json, strerror(errno));
            failed = 1;
        }
        if (f)
            fclose(f);
        free(text);
    }
    cJSON_Delete(root);
    fm_dataset_free(&ds);
    return failed;
}
