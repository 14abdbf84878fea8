/* bench_cuda.c: images/s and latency of the CUDA/cuDNN backend per model,
 * precision and batch size, for a GPU machine (benchmarks/gpu/run-on-gpu.sh
 * runs it next to bench_torch.py on the same weights and images).
 *
 * Per point (model, precision, batch):
 *   device_compute   CUDA-graph replays of the compute sequence (pixels
 *                    already on the GPU -> probabilities on the GPU), one
 *                    stream, back to back, timed with CUDA events: the
 *                    kernel benchmark;
 *   device_copies    the same with the H2D copy of the pixels and the D2H
 *                    copy of the results from/to pinned staging, one stream;
 *   device_streams   device_copies on every stream at once (copies of one
 *                    batch overlap compute of another);
 *   e2e_sync         infer() wall-clock latency (p50, p99) with pinned
 *                    buffers, one call at a time;
 *   e2e_async        submit() throughput with 2 batches per stream in flight.
 * Weights: <models>/v1 (MLP) and <models>/v2 (CNN) when present, otherwise
 * reproducible random weights written there (so bench_torch.py reads the
 * very same file). Pixels: the t10k images (--data, $FM_DATA or the test
 * fixtures) repeated to fill the batch. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "fm_backend.h"
#include "fm_cuda.h"
#include "fm_error.h"
#include "fm_idx.h"
#include "fm_log.h"
#include "fm_model.h"
#include "fm_time.h"

#ifndef FM_BUILD_COMMIT
#define FM_BUILD_COMMIT "unknown"
#endif
#ifndef FM_SOURCE_DIR
#define FM_SOURCE_DIR "."
#endif

#define MAX_LIST 16

typedef struct options {
    const char *models;
    const char *data;
    const char *json;
    size_t batches[MAX_LIST];
    int nbatches;
    fm_precision_t precs[4];
    int nprecs;
    int which[2]; /* v1, v2 */
    int streams;
    double ms; /* target measuring time per point */
} options_t;

static void usage(FILE *f) {
    fprintf(f, "usage: bench_cuda [--models DIR] [--data DIR] [--json FILE] [--batches 1,16,256,1024,4096,8192]\n"
               "                  [--precisions fp32,tf32,fp16,bf16] [--only v1|v2] [--streams N] [--ms MS]\n"
               "  --models DIR  model directories DIR/v1 (mlp) and DIR/v2 (cnn); random weights are written\n"
               "                there when missing (default: <source>/models, else ./bench-models)\n"
               "  --data DIR    Fashion-MNIST directory for the t10k images (default $FM_DATA, else the fixtures)\n"
               "  --ms MS       measuring time per point (default 150)\n");
}

static int parse_sizes(const char *s, size_t *out) {
    int n = 0;
    char *copy = strdup(s), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *end;
        errno = 0;
        unsigned long v = strtoul(tok, &end, 10);
        if (errno || *end || v == 0 || v > 32768 || n == MAX_LIST) {
            free(copy);
            return -1;
        }
        out[n++] = v;
    }
    free(copy);
    return n;
}

static int parse_args(int argc, char **argv, options_t *o) {
    static const struct option longopts[] = {
        {"models", required_argument, 0, 'm'}, {"data", required_argument, 0, 'd'},
        {"json", required_argument, 0, 'j'},   {"batches", required_argument, 0, 'b'},
        {"precisions", required_argument, 0, 'p'}, {"only", required_argument, 0, 'o'},
        {"streams", required_argument, 0, 's'}, {"ms", required_argument, 0, 't'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    size_t defaults[] = {1, 16, 256, 1024, 4096, 8192};
    memcpy(o->batches, defaults, sizeof defaults);
    o->nbatches = 6;
    fm_precision_t all[] = {FM_PRECISION_FP32, FM_PRECISION_TF32, FM_PRECISION_FP16, FM_PRECISION_BF16};
    memcpy(o->precs, all, sizeof all);
    o->nprecs = 4;
    o->which[0] = o->which[1] = 1;
    o->streams = 4;
    o->ms = 150;
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'm': o->models = optarg; break;
        case 'd': o->data = optarg; break;
        case 'j': o->json = optarg; break;
        case 'b':
            if ((o->nbatches = parse_sizes(optarg, o->batches)) <= 0) {
                fprintf(stderr, "bench_cuda: --batches wants sizes in 1..32768\n");
                return 2;
            }
            break;
        case 'p': {
            o->nprecs = 0;
            char *copy = strdup(optarg), *save = NULL;
            for (char *tok = strtok_r(copy, ",", &save); tok && o->nprecs < 4; tok = strtok_r(NULL, ",", &save))
                if (fm_precision_parse(tok, &o->precs[o->nprecs++]) != 0) {
                    fprintf(stderr, "bench_cuda: %s\n", fm_last_error());
                    free(copy);
                    return 2;
                }
            free(copy);
            break;
        }
        case 'o':
            o->which[0] = strcmp(optarg, "v1") == 0;
            o->which[1] = strcmp(optarg, "v2") == 0;
            break;
        case 's': o->streams = atoi(optarg); break;
        case 't': o->ms = atof(optarg); break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); return 2;
        }
    }
    if (o->nprecs < 1 || o->streams < 1 || o->streams > 8 || !(o->ms > 0) || (!o->which[0] && !o->which[1])) {
        usage(stderr);
        return 2;
    }
    return 0;
}

/* ---- weights and images ------------------------------------------------ */

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Kaiming-uniform weights: speed does not depend on them, but activations
 * of a realistic scale keep every precision's arithmetic finite. */
static fm_model_t *random_model(fm_arch_t arch, const char *dir, const char *version) {
    fm_model_t *m = fm_model_new(arch);
    if (!m)
        return NULL;
    uint64_t s = arch == FM_ARCH_MLP ? 1 : 2;
    for (int p = 0; p < fm_model_param_count(m); p++) {
        fm_tensor_t *t = fm_model_param_mut(m, p);
        size_t fan_in = t->ndim > 1 ? t->numel / (size_t)t->shape[0] : 16;
        double bound = sqrt(6.0 / (double)fan_in);
        for (size_t i = 0; i < t->numel; i++)
            t->data[i] = (float)((2.0 * (double)(splitmix(&s) >> 11) / 9007199254740992.0 - 1.0) * bound);
    }
    fm_model_set_identity(m, arch == FM_ARCH_MLP ? "bench-random-mlp" : "bench-random-cnn", version);
    if (fm_model_save(m, dir) != 0) {
        fprintf(stderr, "bench_cuda: cannot write %s: %s\n", dir, fm_last_error());
        fm_model_free(m);
        return NULL;
    }
    return m;
}

static fm_model_t *load_or_make(const char *models, const char *version, fm_arch_t arch, int *random) {
    char dir[1024], json[1100];
    if ((size_t)snprintf(dir, sizeof dir, "%s/%s", models, version) >= sizeof dir) {
        fprintf(stderr, "bench_cuda: path too long: %s\n", models);
        return NULL;
    }
    snprintf(json, sizeof json, "%.1023s/model.json", dir);
    struct stat st;
    *random = 0;
    if (stat(json, &st) == 0) {
        fm_model_t *m = NULL;
        if (fm_model_load(dir, &m) != 0) {
            fprintf(stderr, "bench_cuda: %s\n", fm_last_error());
            return NULL;
        }
        if (fm_model_arch(m) != arch) {
            fprintf(stderr, "bench_cuda: %s is %s, expected %s\n", dir, fm_arch_name(fm_model_arch(m)),
                    fm_arch_name(arch));
            fm_model_free(m);
            return NULL;
        }
        return m;
    }
    *random = 1;
    if (mkdir(models, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "bench_cuda: cannot create %s: %s\n", models, strerror(errno));
        return NULL;
    }
    return random_model(arch, dir, version);
}

static uint8_t *load_images(const char *data, size_t n, char *source, size_t len) {
    fm_dataset_t ds;
    char fixtures[1024];
    const char *dir = data ? data : getenv("FM_DATA");
    int rc = dir && *dir ? fm_dataset_load(dir, "t10k", &ds) : -1;
    if (rc) {
        snprintf(fixtures, sizeof fixtures, "%s/tests/fixtures/fashion-mnist", FM_SOURCE_DIR);
        dir = fixtures;
        if (fm_dataset_load(dir, "t10k", &ds) != 0) {
            fprintf(stderr, "bench_cuda: no images: %s\n", fm_last_error());
            return NULL;
        }
    }
    snprintf(source, len, "%s (%zu images)", ds.images_path, ds.n);
    uint8_t *px = malloc(n * FM_IMAGE_PIXELS);
    if (px)
        for (size_t i = 0; i < n; i++)
            memcpy(px + i * FM_IMAGE_PIXELS, ds.images + (i % ds.n) * FM_IMAGE_PIXELS, FM_IMAGE_PIXELS);
    fm_dataset_free(&ds);
    return px;
}

/* ---- measurements -------------------------------------------------------- */

/* Runs fm_cuda_bench_device long enough to last about `ms`. */
static int device_point(fm_backend_model_t *bm, const uint8_t *px, size_t batch, int copies, int all, double ms,
                        fm_cuda_bench_result_t *r) {
    int rc = fm_cuda_bench_device(bm, px, batch, copies, 3, all, r); /* warm-up and estimate */
    if (rc)
        return rc;
    double per = r->ms_total / 3.0;
    int iters = per > 0 ? (int)(ms / per) : 1000;
    if (iters < 5)
        iters = 5;
    if (iters > 20000)
        iters = 20000;
    return fm_cuda_bench_device(bm, px, batch, copies, iters, all, r);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct async_state {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int inflight;
    int errors;
} async_state_t;

static void async_done(fm_batch_t *b, int status, void *user) {
    (void)b;
    async_state_t *s = user;
    pthread_mutex_lock(&s->mu);
    s->inflight--;
    s->errors += status != 0;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

typedef struct e2e_result {
    double p50_ms, p99_ms, sync_ips, async_ips;
} e2e_result_t;

static int e2e_point(fm_engine_t *e, fm_backend_model_t *bm, const uint8_t *px, size_t batch, int streams, double ms,
                     e2e_result_t *r) {
    memset(r, 0, sizeof *r);
    const int slots = 2 * streams;
    uint8_t *in = fm_engine_host_alloc(e, batch * FM_IMAGE_PIXELS);
    float *probs = fm_engine_host_alloc(e, (size_t)slots * batch * FM_NUM_CLASSES * sizeof(float));
    int32_t *labels = fm_engine_host_alloc(e, (size_t)slots * batch * sizeof(int32_t));
    float *conf = fm_engine_host_alloc(e, (size_t)slots * batch * sizeof(float));
    int rc = 0;
    if (!in || !probs || !labels || !conf) {
        rc = fm_fail(FM_ENOMEM, "bench_cuda: pinned buffers");
        goto done;
    }
    memcpy(in, px, batch * FM_IMAGE_PIXELS);
    fm_batch_t b = {.pixels = in, .n = batch, .probs = probs, .labels = labels, .confidence = conf};
    /* Synchronous latency. */
    enum { MAX_SAMPLES = 4000 };
    static double lat[MAX_SAMPLES];
    int n = 0;
    uint64_t t_end = fm_now_ns() + (uint64_t)(ms * 1e6);
    for (int i = 0; i < 3; i++)
        if ((rc = fm_engine_infer(e, bm, &b)))
            goto done;
    while (n < MAX_SAMPLES && (n < 10 || fm_now_ns() < t_end)) {
        uint64_t t0 = fm_now_ns();
        if ((rc = fm_engine_infer(e, bm, &b)))
            goto done;
        lat[n++] = (double)(fm_now_ns() - t0) / 1e6;
    }
    qsort(lat, (size_t)n, sizeof lat[0], cmp_double);
    r->p50_ms = lat[n / 2];
    r->p99_ms = lat[(int)((n - 1) * 0.99)];
    r->sync_ips = (double)batch / (r->p50_ms / 1000.0);
    /* Asynchronous throughput: keep `slots` batches in flight. */
    async_state_t st;
    memset(&st, 0, sizeof st);
    pthread_mutex_init(&st.mu, NULL);
    pthread_cond_init(&st.cv, NULL);
    fm_batch_t bs[16];
    for (int i = 0; i < slots; i++)
        bs[i] = (fm_batch_t){.pixels = in, .n = batch, .probs = probs + (size_t)i * batch * FM_NUM_CLASSES,
                             .labels = labels + (size_t)i * batch, .confidence = conf + (size_t)i * batch};
    size_t done_images = 0;
    uint64_t t0 = fm_now_ns();
    t_end = t0 + (uint64_t)(ms * 1e6);
    int next = 0;
    pthread_mutex_lock(&st.mu);
    while (fm_now_ns() < t_end || done_images == 0) {
        while (st.inflight >= slots)
            pthread_cond_wait(&st.cv, &st.mu);
        st.inflight++;
        pthread_mutex_unlock(&st.mu);
        /* A slot is free once fewer than `slots` are in flight; cycling
         * through them in order reuses the one that finished first only
         * approximately, which is fine: outputs are not read. */
        rc = fm_engine_submit(e, bm, &bs[next], async_done, &st);
        next = (next + 1) % slots;
        pthread_mutex_lock(&st.mu);
        if (rc) {
            st.inflight--;
            break;
        }
        done_images += batch;
    }
    while (st.inflight > 0)
        pthread_cond_wait(&st.cv, &st.mu);
    pthread_mutex_unlock(&st.mu);
    double secs = (double)(fm_now_ns() - t0) / 1e9;
    r->async_ips = secs > 0 ? (double)done_images / secs : 0;
    if (!rc && st.errors)
        rc = fm_fail(FM_EBACKEND, "bench_cuda: %d asynchronous batches failed", st.errors);
    pthread_mutex_destroy(&st.mu);
    pthread_cond_destroy(&st.cv);
done:
    fm_engine_host_free(e, in);
    fm_engine_host_free(e, probs);
    fm_engine_host_free(e, labels);
    fm_engine_host_free(e, conf);
    return rc;
}

static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fputc('\\', f);
        if ((unsigned char)*s >= 0x20)
            fputc(*s, f);
    }
    fputc('"', f);
}

int main(int argc, char **argv) {
    options_t o;
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc;
    char models_dir[1024];
    if (o.models)
        snprintf(models_dir, sizeof models_dir, "%s", o.models);
    else
        snprintf(models_dir, sizeof models_dir, "%s/models", FM_SOURCE_DIR);
    size_t max_batch = 1;
    for (int i = 0; i < o.nbatches; i++)
        if (o.batches[i] > max_batch)
            max_batch = o.batches[i];
    char source[1200];
    uint8_t *px = load_images(o.data, max_batch, source, sizeof source);
    if (!px)
        return 1;
    FILE *jf = o.json ? fopen(o.json, "w") : NULL;
    if (o.json && !jf) {
        fprintf(stderr, "bench_cuda: cannot write %s\n", o.json);
        return 1;
    }
    time_t now = time(NULL);
    char date[64];
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    printf("bench_cuda: commit %s, %s, images %s\n", FM_BUILD_COMMIT, date, source);
    /* Both models first, so that their files exist for bench_torch.py even
     * when this machine has no GPU. */
    fm_model_t *models[2] = {NULL, NULL};
    int randoms[2] = {0, 0};
    for (int v = 0; v < 2; v++)
        if (o.which[v] && !(models[v] = load_or_make(models_dir, v ? "v2" : "v1", v ? FM_ARCH_CNN : FM_ARCH_MLP,
                                                     &randoms[v])))
            return 1;
    int failures = 0;
    for (int v = 0; v < 2; v++) {
        if (!o.which[v])
            continue;
        fm_arch_t arch = v ? FM_ARCH_CNN : FM_ARCH_MLP;
        const char *version = v ? "v2" : "v1";
        int random = randoms[v];
        fm_model_t *m = models[v];
        printf("\n%s (%s, %s weights, %.2f MFLOP/image) from %s/%s\n", version, fm_arch_summary(arch),
               random ? "random" : "trained", fm_arch_flops(arch) / 1e6, models_dir, version);
        for (int p = 0; p < o.nprecs; p++) {
            fm_engine_t e;
            fm_backend_config_t cfg;
            fm_backend_config_default(&cfg);
            cfg.max_batch = (int)max_batch;
            cfg.streams = o.streams;
            cfg.precision = o.precs[p];
            cfg.cuda_graphs = 1;
            if ((rc = fm_engine_open("cuda", &cfg, &e))) {
                fprintf(stderr, "bench_cuda: %s\n", fm_last_error());
                return 77;
            }
            char desc[512];
            fm_engine_describe(&e, desc, sizeof desc);
            fm_backend_model_t *bm = NULL;
            if ((rc = fm_engine_prepare(&e, m, &bm))) {
                fprintf(stderr, "bench_cuda: %s %s: prepare failed: %s\n", version, fm_precision_name(o.precs[p]),
                        fm_last_error());
                failures++;
                fm_engine_close(&e);
                continue;
            }
            fm_cuda_model_info_t info;
            fm_cuda_model_info(bm, &info);
            printf("  %s: %s; prepared in %.0f ms (%.0f MiB); %s\n", fm_precision_name(o.precs[p]),
                   info.exact_fp32 ? "exact fp32" : o.precs[p] == FM_PRECISION_FP32 ? "fp32 with TF32 layers" : "tensor cores",
                   info.prepare_ms, (double)info.device_bytes / 1048576.0, info.engines);
            printf("  %6s %14s %14s %14s %10s %10s %12s %12s\n", "batch", "compute img/s", "+copies img/s",
                   "streams img/s", "p50 ms", "p99 ms", "sync img/s", "async img/s");
            for (int bi = 0; bi < o.nbatches; bi++) {
                size_t batch = o.batches[bi];
                fm_cuda_bench_result_t comp, copies, streams;
                e2e_result_t e2e;
                rc = device_point(bm, px, batch, 0, 0, o.ms, &comp);
                if (!rc)
                    rc = device_point(bm, px, batch, 1, 0, o.ms, &copies);
                if (!rc)
                    rc = device_point(bm, px, batch, 1, 1, o.ms, &streams);
                if (!rc)
                    rc = e2e_point(&e, bm, px, batch, o.streams, o.ms, &e2e);
                if (rc) {
                    fprintf(stderr, "bench_cuda: %s %s batch %zu: %s\n", version, fm_precision_name(o.precs[p]), batch,
                            fm_last_error());
                    failures++;
                    continue;
                }
                printf("  %6zu %14.0f %14.0f %14.0f %10.3f %10.3f %12.0f %12.0f\n", batch, comp.images_per_s,
                       copies.images_per_s, streams.images_per_s, e2e.p50_ms, e2e.p99_ms, e2e.sync_ips, e2e.async_ips);
                if (jf) {
                    fprintf(jf, "{\"bench\":\"cuda\",\"model\":\"%s\",\"arch\":\"%s\",\"weights\":\"%s\",", version,
                            fm_arch_name(arch), random ? "random" : "trained");
                    fprintf(jf, "\"precision\":\"%s\",\"exact_fp32\":%s,\"batch\":%zu,\"streams\":%d,",
                            fm_precision_name(o.precs[p]), info.exact_fp32 ? "true" : "false", batch, o.streams);
                    fprintf(jf, "\"graphs\":%s,\"device_compute_ips\":%.1f,\"device_compute_ms\":%.5f,",
                            info.graphs ? "true" : "false", comp.images_per_s, comp.ms_per_batch);
                    fprintf(jf, "\"device_copies_ips\":%.1f,\"device_copies_ms\":%.5f,\"device_streams_ips\":%.1f,",
                            copies.images_per_s, copies.ms_per_batch, streams.images_per_s);
                    fprintf(jf, "\"e2e_p50_ms\":%.4f,\"e2e_p99_ms\":%.4f,\"e2e_sync_ips\":%.1f,\"e2e_async_ips\":%.1f,",
                            e2e.p50_ms, e2e.p99_ms, e2e.sync_ips, e2e.async_ips);
                    fprintf(jf, "\"prepare_ms\":%.1f,\"engines\":", info.prepare_ms);
                    json_string(jf, info.engines);
                    fprintf(jf, ",\"device\":");
                    json_string(jf, desc);
                    fprintf(jf, ",\"commit\":\"%s\",\"date\":\"%s\"}\n", FM_BUILD_COMMIT, date);
                    fflush(jf);
                }
            }
            fm_engine_release(&e, bm);
            fm_engine_close(&e);
        }
        fm_model_free(m);
    }
    if (jf)
        fclose(jf);
    free(px);
    return failures ? 1 : 0;
}
