/* bench_engine.c: throughput of the CPU engine per model and batch size
 * (images/s and GFLOP/s from fm_arch_flops), optionally comparing engine
 * variants (implementation, tile, threads) side by side in one run.
 *
 * Each point: warm-up, then --repeats timing windows that together last at
 * least --seconds; the median window is reported, with images per CPU-second
 * of the process beside it (on a shared machine wall-clock rates swing with
 * the neighbours' load; CPU time shows a variant's own cost better). Weights are random (speed
 * does not depend on their values); pixels are the real t10k images when
 * --data or FM_DATA names the data directory, otherwise random bytes. */
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
#include "fm_backend.h"
#include "fm_cpu_backend.h"
#include "fm_error.h"
#include "fm_idx.h"
#include "fm_model.h"
#include "fm_time.h"

#define MAX_BATCHES 16
#define MAX_VARIANTS 16
#define MAX_REPEATS 64

typedef struct variant {
    char label[64];
    fm_cpu_impl_kind_t impl;
    size_t tile;
    int threads; /* -1: the --threads value */
    int nhwc;
    fm_cpu_parallel_t parallel;
} variant_t;

typedef struct options {
    int threads;
    double seconds;
    int repeats;
    const char *json;
    const char *data;
    int models[2]; /* run mlp, run cnn */
    size_t batches[MAX_BATCHES];
    int nbatches;
    int compare;
} options_t;

static void usage(FILE *f) {
    fprintf(f,
            "usage: bench_engine [--threads N] [--seconds S] [--repeats R] [--batches 1,16,256,4096]\n"
            "                    [--models mlp,cnn] [--compare] [--data DIR] [--json FILE]\n"
            "  --threads N   CPU threads per batch (0 = every core; default 0)\n"
            "  --seconds S   minimum measuring time per point (default 1)\n"
            "  --repeats R   timing windows per point; the median is reported (default 5)\n"
            "  --compare     also run the alternative engine variants and print ratios\n"
            "  --data DIR    use the t10k images from DIR (default $FM_DATA, else random pixels)\n"
            "  --json FILE   write every result as JSON\n");
}

static int parse_list(const char *s, size_t *out, int max) {
    int n = 0;
    char *copy = strdup(s), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(tok, &end, 10);
        if (errno || *end || v == 0 || v > (1u << 20) || n == max) {
            free(copy);
            return -1;
        }
        out[n++] = (size_t)v;
    }
    free(copy);
    return n;
}

static int parse_args(int argc, char **argv, options_t *o) {
    static const struct option longopts[] = {
        {"threads", required_argument, 0, 't'}, {"seconds", required_argument, 0, 's'},
        {"repeats", required_argument, 0, 'r'}, {"batches", required_argument, 0, 'b'},
        {"models", required_argument, 0, 'm'},  {"compare", no_argument, 0, 'c'},
        {"data", required_argument, 0, 'd'},    {"json", required_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    o->seconds = 1.0;
    o->repeats = 5;
    o->models[0] = o->models[1] = 1;
    size_t defaults[] = {1, 16, 256, 4096};
    memcpy(o->batches, defaults, sizeof defaults);
    o->nbatches = 4;
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 't': o->threads = atoi(optarg); break;
        case 's': o->seconds = atof(optarg); break;
        case 'r': o->repeats = atoi(optarg); break;
        case 'b':
            o->nbatches = parse_list(optarg, o->batches, MAX_BATCHES);
            if (o->nbatches <= 0) {
                fprintf(stderr, "bench_engine: --batches wants a comma list of sizes in 1..1048576\n");
                return 2;
            }
            break;
        case 'm':
            o->models[0] = strstr(optarg, "mlp") != NULL;
            o->models[1] = strstr(optarg, "cnn") != NULL;
            break;
        case 'c': o->compare = 1; break;
        case 'd': o->data = optarg; break;
        case 'j': o->json = optarg; break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); return 2;
        }
    }
    if (o->threads < 0 || o->seconds <= 0 || o->repeats < 1 || o->repeats > MAX_REPEATS ||
        (!o->models[0] && !o->models[1])) {
        usage(stderr);
        return 2;
    }
    return 0;
}

/* splitmix64, for reproducible weights and pixels. */
static uint64_t next_u64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static fm_model_t *random_model(fm_arch_t arch) {
    fm_model_t *m = fm_model_new(arch);
    if (!m)
        return NULL;
    uint64_t s = 42;
    for (int p = 0; p < fm_model_param_count(m); p++) {
        fm_tensor_t *t = fm_model_param_mut(m, p);
        for (size_t i = 0; i < t->numel; i++)
            t->data[i] = (float)((double)(next_u64(&s) >> 11) / 9007199254740992.0 - 0.5) * 0.1f;
    }
    return m;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct result {
    double ips;         /* median images/s */
    double ipcs;        /* images per CPU-second of the whole process, over all windows */
    double runs[MAX_REPEATS];
    int nruns;
} result_t;

/* Times one batch size on a prepared model. */
static int measure(fm_engine_t *e, fm_backend_model_t *bm, const uint8_t *pool, size_t pool_n, size_t bs,
                   const options_t *o, result_t *r) {
    uint8_t *px = malloc(bs * FM_IMAGE_PIXELS);
    float *probs = malloc(bs * FM_NUM_CLASSES * sizeof(float));
    int32_t *labels = malloc(bs * sizeof(int32_t));
    float *conf = malloc(bs * sizeof(float));
    if (!px || !probs || !labels || !conf) {
        fprintf(stderr, "bench_engine: out of memory for batch %zu\n", bs);
        return FM_ENOMEM;
    }
    for (size_t i = 0; i < bs; i++)
        memcpy(px + i * FM_IMAGE_PIXELS, pool + (i % pool_n) * FM_IMAGE_PIXELS, FM_IMAGE_PIXELS);
    fm_batch_t b = {.pixels = px, .n = bs, .probs = probs, .labels = labels, .confidence = conf};
    int rc = 0;
    /* Warm-up: at least three calls and 0.1 s. */
    uint64_t t0 = fm_now_ns();
    for (int i = 0; rc == 0 && (i < 3 || fm_now_ns() - t0 < 100000000ull); i++)
        rc = fm_engine_infer(e, bm, &b);
    double window = o->seconds / o->repeats;
    size_t total = 0;
    struct timespec c0, c1;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    for (int k = 0; rc == 0 && k < o->repeats; k++) {
        size_t images = 0;
        uint64_t start = fm_now_ns(), now;
        do {
            rc = fm_engine_infer(e, bm, &b);
            images += bs;
            now = fm_now_ns();
        } while (rc == 0 && (double)(now - start) * 1e-9 < window);
        r->runs[k] = (double)images / ((double)(now - start) * 1e-9);
        total += images;
    }
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    double cpu = (double)(c1.tv_sec - c0.tv_sec) + 1e-9 * (double)(c1.tv_nsec - c0.tv_nsec);
    r->ipcs = cpu > 0 ? (double)total / cpu : 0;
    if (rc == 0) {
        r->nruns = o->repeats;
        double sorted[MAX_REPEATS];
        memcpy(sorted, r->runs, sizeof(double) * (size_t)r->nruns);
        qsort(sorted, (size_t)r->nruns, sizeof(double), cmp_double);
        r->ips = r->nruns % 2 ? sorted[r->nruns / 2] : 0.5 * (sorted[r->nruns / 2 - 1] + sorted[r->nruns / 2]);
    }
    free(px);
    free(probs);
    free(labels);
    free(conf);
    return rc;
}

static int variants_for(fm_arch_t arch, int compare, variant_t *v) {
    int n = 0;
    v[n++] = (variant_t){"default", FM_CPU_IMPL_AUTO, 0, -1, 0, FM_CPU_PARALLEL_AUTO};
    if (!compare)
        return n;
    if (arch == FM_ARCH_MLP) {
        v[n++] = (variant_t){"primitives tile 256", FM_CPU_IMPL_PRIMITIVES, 256, -1, 0, FM_CPU_PARALLEL_AUTO};
        v[n++] = (variant_t){"intra-op threads", FM_CPU_IMPL_AUTO, 0, -1, 0, FM_CPU_PARALLEL_INTRA};
        v[n++] = (variant_t){"primitives tile 1024", FM_CPU_IMPL_PRIMITIVES, 1024, -1, 0, FM_CPU_PARALLEL_AUTO};
        v[n++] = (variant_t){"sgemm tile 64", FM_CPU_IMPL_SGEMM, 64, -1, 0, FM_CPU_PARALLEL_AUTO};
        v[n++] = (variant_t){"sgemm tile 256", FM_CPU_IMPL_SGEMM, 256, -1, 0, FM_CPU_PARALLEL_AUTO};
        v[n++] = (variant_t){"sgemm tile 1024", FM_CPU_IMPL_SGEMM, 1024, -1, 0, FM_CPU_PARALLEL_AUTO};
        v[n++] = (variant_t){"default, 1 thread", FM_CPU_IMPL_AUTO, 0, 1, 0, FM_CPU_PARALLEL_AUTO};
    } else {
        v[n++] = (variant_t){"intra-op threads", FM_CPU_IMPL_AUTO, 0, -1, 0, FM_CPU_PARALLEL_INTRA};
        v[n++] = (variant_t){"intra-op tile 256", FM_CPU_IMPL_AUTO, 256, -1, 0, FM_CPU_PARALLEL_INTRA};
        v[n++] = (variant_t){"primitives tile 16", FM_CPU_IMPL_PRIMITIVES, 16, -1, 0, FM_CPU_PARALLEL_AUTO};
        v[n++] = (variant_t){"primitives tile 32", FM_CPU_IMPL_PRIMITIVES, 32, -1, 0, FM_CPU_PARALLEL_AUTO};
        v[n++] = (variant_t){"primitives tile 64", FM_CPU_IMPL_PRIMITIVES, 64, -1, 0, FM_CPU_PARALLEL_AUTO};
        v[n++] = (variant_t){"primitives tile 128", FM_CPU_IMPL_PRIMITIVES, 128, -1, 0, FM_CPU_PARALLEL_AUTO};
        v[n++] = (variant_t){"primitives tile 256", FM_CPU_IMPL_PRIMITIVES, 256, -1, 0, FM_CPU_PARALLEL_AUTO};
        v[n++] = (variant_t){"nhwc tile 32", FM_CPU_IMPL_PRIMITIVES, 32, -1, 1, FM_CPU_PARALLEL_AUTO};
        v[n++] = (variant_t){"nhwc tile 64", FM_CPU_IMPL_PRIMITIVES, 64, -1, 1, FM_CPU_PARALLEL_AUTO};
        v[n++] = (variant_t){"nhwc tile 256", FM_CPU_IMPL_PRIMITIVES, 256, -1, 1, FM_CPU_PARALLEL_AUTO};
        v[n++] = (variant_t){"default, 1 thread", FM_CPU_IMPL_AUTO, 0, 1, 0, FM_CPU_PARALLEL_AUTO};
    }
    return n;
}

int main(int argc, char **argv) {
    options_t o;
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc;

    /* Pixels: real images when a data directory is given, else random bytes. */
    fm_dataset_t ds = {0};
    const char *data = o.data ? o.data : getenv("FM_DATA");
    uint8_t *pool = NULL;
    size_t pool_n = 0;
    const char *pixels_from = "random pixels";
    if (data && *data) {
        if (fm_dataset_load(data, "t10k", &ds) != 0) {
            fprintf(stderr, "bench_engine: %s\n", fm_last_error());
            return 1;
        }
        pool = ds.images;
        pool_n = ds.n;
        pixels_from = ds.images_path[0] ? ds.images_path : data;
    } else {
        pool_n = 1000;
        pool = malloc(pool_n * FM_IMAGE_PIXELS);
        uint64_t s = 7;
        for (size_t i = 0; i < pool_n * FM_IMAGE_PIXELS; i++)
            pool[i] = (uint8_t)next_u64(&s);
    }

    size_t max_batch = 1;
    for (int i = 0; i < o.nbatches; i++)
        if (o.batches[i] > max_batch)
            max_batch = o.batches[i];

    char cpu[256], commit[128], date[64], engine_line[256] = "";
    bench_cpu_model(cpu, sizeof cpu);
    bench_commit(commit, sizeof commit);
    time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    {
        fm_backend_config_t cfg;
        fm_backend_config_default(&cfg);
        cfg.threads = o.threads;
        fm_engine_t e;
        if (fm_engine_open("cpu", &cfg, &e) != 0) {
            fprintf(stderr, "bench_engine: %s\n", fm_last_error());
            return 1;
        }
        fm_engine_describe(&e, engine_line, sizeof engine_line);
        fm_engine_close(&e);
    }
    printf("fmserve CPU engine benchmark\n");
    printf("machine: %s, %ld cores online\n", cpu, cores);
    printf("engine:  %s\n", engine_line);
    printf("date:    %s   commit: %s\n", date, commit);
    printf("points:  >= %.2f s each, median of %d windows; %s\n\n", o.seconds, o.repeats, pixels_from);

    cJSON *root = cJSON_CreateObject();
    cJSON *machine = cJSON_AddObjectToObject(root, "machine");
    cJSON_AddStringToObject(machine, "cpu", cpu);
    cJSON_AddNumberToObject(machine, "cores", (double)cores);
    cJSON_AddStringToObject(machine, "engine", engine_line);
    cJSON_AddStringToObject(root, "date", date);
    cJSON_AddStringToObject(root, "commit", commit);
    cJSON_AddNumberToObject(root, "threads", o.threads);
    cJSON_AddNumberToObject(root, "seconds_per_point", o.seconds);
    cJSON_AddNumberToObject(root, "repeats", o.repeats);
    cJSON_AddStringToObject(root, "pixels", pixels_from);
    cJSON *results = cJSON_AddArrayToObject(root, "results");

    int failed = 0;
    for (int a = 0; a < 2; a++) {
        if (!o.models[a])
            continue;
        fm_arch_t arch = a == 0 ? FM_ARCH_MLP : FM_ARCH_CNN;
        fm_model_t *m = random_model(arch);
        if (!m) {
            fprintf(stderr, "bench_engine: out of memory\n");
            return 1;
        }
        double flops = fm_arch_flops(arch);
        variant_t vars[MAX_VARIANTS];
        int nv = variants_for(arch, o.compare, vars);
        double base[MAX_BATCHES] = {0};
        printf("%s (%s), %.3f MFLOP/image\n", fm_arch_name(arch), fm_arch_summary(arch), flops * 1e-6);
        printf("  %-22s %6s %12s %9s %10s %7s %12s\n", "variant", "batch", "images/s", "GFLOP/s", "ms/batch",
               "ratio", "img/CPU-s");
        for (int vi = 0; vi < nv; vi++) {
            const variant_t *v = &vars[vi];
            fm_backend_config_t cfg;
            fm_backend_config_default(&cfg);
            cfg.threads = v->threads >= 0 ? v->threads : o.threads;
            cfg.max_batch = (int)max_batch;
            fm_engine_t e;
            fm_backend_model_t *bm = NULL;
            fm_cpu_tuning_t t;
            fm_cpu_tuning_default(&t);
            t.parallel = v->parallel;
            if (arch == FM_ARCH_MLP) {
                t.mlp_impl = v->impl;
                t.mlp_tile = v->tile;
            } else {
                t.cnn_impl = v->impl;
                t.cnn_tile = v->tile;
                t.cnn_nhwc = v->nhwc;
            }
            if (fm_engine_open("cpu", &cfg, &e) != 0 || fm_cpu_backend_set_tuning(e.backend, &t) != 0 ||
                fm_engine_prepare(&e, m, &bm) != 0) {
                fprintf(stderr, "bench_engine: %s %s: %s\n", fm_arch_name(arch), v->label, fm_last_error());
                failed = 1;
                if (e.ops)
                    fm_engine_close(&e);
                continue;
            }
            char plan[512];
            fm_cpu_model_describe(bm, plan, sizeof plan);
            printf("  %-22s plan: %s\n", v->label, plan);
            for (int bi = 0; bi < o.nbatches; bi++) {
                result_t r = {0};
                size_t bs = o.batches[bi];
                if (measure(&e, bm, pool, pool_n, bs, &o, &r) != 0) {
                    fprintf(stderr, "bench_engine: %s %s batch %zu: %s\n", fm_arch_name(arch), v->label, bs,
                            fm_last_error());
                    failed = 1;
                    continue;
                }
                if (vi == 0)
                    base[bi] = r.ips;
                double ratio = base[bi] > 0 ? r.ips / base[bi] : 0;
                printf("  %-22s %6zu %12.0f %9.1f %10.3f %7.2f %12.0f\n", v->label, bs, r.ips, r.ips * flops * 1e-9,
                       1e3 * (double)bs / r.ips, ratio, r.ipcs);
                cJSON *j = cJSON_CreateObject();
                cJSON_AddStringToObject(j, "model", fm_arch_name(arch));
                cJSON_AddStringToObject(j, "variant", v->label);
                cJSON_AddNumberToObject(j, "threads", cfg.threads);
                cJSON_AddStringToObject(j, "plan", plan);
                cJSON_AddNumberToObject(j, "batch", (double)bs);
                cJSON_AddNumberToObject(j, "images_per_s", r.ips);
                cJSON_AddNumberToObject(j, "gflops", r.ips * flops * 1e-9);
                cJSON_AddNumberToObject(j, "ms_per_batch", 1e3 * (double)bs / r.ips);
                cJSON_AddNumberToObject(j, "ratio_to_default", ratio);
                cJSON_AddNumberToObject(j, "images_per_cpu_s", r.ipcs);
                cJSON_AddItemToObject(j, "runs_images_per_s", cJSON_CreateDoubleArray(r.runs, r.nruns));
                cJSON_AddItemToArray(results, j);
            }
            fm_engine_release(&e, bm);
            fm_engine_close(&e);
        }
        printf("\n");
        fm_model_free(m);
    }

    if (o.json) {
        char *text = cJSON_Print(root);
        FILE *f = fopen(o.json, "w");
        if (!f || fputs(text, f) < 0 || fputc('\n', f) == EOF) {
            fprintf(stderr, "bench_engine: cannot write %s: %s\n", o.json, strerror(errno));
            failed = 1;
        }
        if (f)
            fclose(f);
        free(text);
    }
    cJSON_Delete(root);
    if (data && *data)
        fm_dataset_free(&ds);
    else
        free(pool);
    return failed;
}
