/* test_cuda_async.c: the CUDA backend's concurrency: many batches submitted
 * at once on every stream give exactly what infer() gives for the same
 * batches; several threads calling infer() at once; pinned (host_alloc) and
 * pageable buffers; CUDA graphs on and off; a max_batch that is not a power
 * of two; release() waiting for batches still in flight; submit() refusals
 * that never call `done`. Skips without a GPU. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_cuda.h"
#include "fm_gpu_test.h"
#include "fm_test.h"

#define NBATCH 48

typedef struct pending {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int remaining;
    int calls[NBATCH];
    int status[NBATCH];
} pending_t;

typedef struct slot {
    pending_t *pend;
    int index;
    fm_batch_t batch;
} slot_t;

static void on_done(fm_batch_t *batch, int status, void *user) {
    slot_t *s = user;
    (void)batch;
    pthread_mutex_lock(&s->pend->mu);
    s->pend->calls[s->index]++;
    s->pend->status[s->index] = status;
    s->pend->remaining--;
    pthread_cond_broadcast(&s->pend->cv);
    pthread_mutex_unlock(&s->pend->mu);
}

static size_t batch_size(int i) {
    static const size_t sizes[] = {1, 7, 64, 255, 256, 257, 600, 33};
    return sizes[i % 8];
}

/* Outputs in engine-allocated memory (pinned for CUDA) or malloc'd. */
static void out_alloc(fm_engine_t *e, fm_gpu_out_t *o, size_t n, int pinned) {
    if (!pinned) {
        fm_gpu_out_alloc(o, n);
        return;
    }
    o->n = n;
    o->probs = fm_engine_host_alloc(e, n * FM_NUM_CLASSES * sizeof(float));
    o->labels = fm_engine_host_alloc(e, n * sizeof(int32_t));
    o->conf = fm_engine_host_alloc(e, n * sizeof(float));
    if (!o->probs || !o->labels || !o->conf)
        abort();
    fm_gpu_out_poison(o);
}

static void out_free(fm_engine_t *e, fm_gpu_out_t *o, int pinned) {
    if (!pinned) {
        fm_gpu_out_free(o);
        return;
    }
    fm_engine_host_free(e, o->probs);
    fm_engine_host_free(e, o->labels);
    fm_engine_host_free(e, o->conf);
}

static int same_outputs(const fm_gpu_out_t *a, const fm_gpu_out_t *b) {
    return memcmp(a->probs, b->probs, a->n * FM_NUM_CLASSES * sizeof(float)) == 0 &&
           memcmp(a->labels, b->labels, a->n * sizeof(int32_t)) == 0 &&
           memcmp(a->conf, b->conf, a->n * sizeof(float)) == 0;
}

typedef struct fixture {
    fm_engine_t e;
    fm_model_t *m;
    fm_backend_model_t *bm;
    uint8_t *px; /* pinned, enough for every batch at its offset */
    size_t offsets[NBATCH];
    fm_gpu_out_t expect[NBATCH];
} fixture_t;

static int fixture_open(fixture_t *f, fm_arch_t arch, int streams, int graphs) {
    memset(f, 0, sizeof *f);
    fm_backend_config_t cfg = fm_gpu_config(FM_PRECISION_FP32, 256, streams, graphs);
    int rc = fm_engine_open("cuda", &cfg, &f->e);
    if (rc)
        return rc;
    f->m = fm_gpu_random_model(arch, 31);
    if ((rc = fm_engine_prepare(&f->e, f->m, &f->bm)))
        return rc;
    size_t total = 0;
    for (int i = 0; i < NBATCH; i++) {
        f->offsets[i] = total;
        total += batch_size(i);
    }
    uint8_t *imgs = fm_gpu_images(total, 0, NULL);
    f->px = fm_engine_host_alloc(&f->e, total * FM_IMAGE_PIXELS);
    if (!imgs || !f->px)
        return FM_ENOMEM;
    memcpy(f->px, imgs, total * FM_IMAGE_PIXELS);
    free(imgs);
    /* The expected outputs: infer() one batch at a time. */
    for (int i = 0; i < NBATCH; i++) {
        fm_gpu_out_alloc(&f->expect[i], batch_size(i));
        fm_batch_t b = fm_gpu_batch(f->px + f->offsets[i] * FM_IMAGE_PIXELS, &f->expect[i]);
        if ((rc = fm_engine_infer(&f->e, f->bm, &b)))
            return rc;
    }
    return 0;
}

static void fixture_close(fixture_t *f) {
    for (int i = 0; i < NBATCH; i++)
        fm_gpu_out_free(&f->expect[i]);
    fm_engine_host_free(&f->e, f->px);
    fm_engine_release(&f->e, f->bm);
    fm_engine_close(&f->e);
    fm_model_free(f->m);
}

static void submit_all(fixture_t *f, const char *what) {
    pending_t pend;
    memset(&pend, 0, sizeof pend);
    pthread_mutex_init(&pend.mu, NULL);
    pthread_cond_init(&pend.cv, NULL);
    pend.remaining = NBATCH;
    slot_t slots[NBATCH];
    fm_gpu_out_t outs[NBATCH];
    for (int i = 0; i < NBATCH; i++) {
        out_alloc(&f->e, &outs[i], batch_size(i), i % 2);
        slots[i] = (slot_t){.pend = &pend, .index = i};
        slots[i].batch = fm_gpu_batch(f->px + f->offsets[i] * FM_IMAGE_PIXELS, &outs[i]);
    }
    for (int i = 0; i < NBATCH; i++) {
        int rc = fm_engine_submit(&f->e, f->bm, &slots[i].batch, on_done, &slots[i]);
        if (rc) {
            FM_TEST_FAIL_AT("%s: submit %d: %s", what, i, fm_last_error());
            pthread_mutex_lock(&pend.mu);
            pend.remaining--;
            pthread_mutex_unlock(&pend.mu);
        }
    }
    pthread_mutex_lock(&pend.mu);
    while (pend.remaining > 0)
        pthread_cond_wait(&pend.cv, &pend.mu);
    pthread_mutex_unlock(&pend.mu);
    int mismatched = 0;
    for (int i = 0; i < NBATCH; i++) {
        if (pend.calls[i] != 1 || pend.status[i] != 0)
            FM_TEST_FAIL_AT("%s: batch %d: done called %d times, status %d", what, i, pend.calls[i], pend.status[i]);
        mismatched += !same_outputs(&outs[i], &f->expect[i]);
        out_free(&f->e, &outs[i], i % 2);
    }
    if (mismatched)
        FM_TEST_FAIL_AT("%s: %d of %d submitted batches differ from infer()", what, mismatched, NBATCH);
    printf("    %s: %d batches, every one identical to infer()\n", what, NBATCH);
    pthread_mutex_destroy(&pend.mu);
    pthread_cond_destroy(&pend.cv);
}

static void test_submit_matches_infer(void) {
    const char *skip = fm_gpu_skip_reason();
    if (skip)
        FM_TEST_SKIP(skip);
    for (int a = 0; a < 2; a++) {
        fixture_t f;
        fm_arch_t arch = a ? FM_ARCH_CNN : FM_ARCH_MLP;
        int rc = fixture_open(&f, arch, 4, 1);
        if (rc) {
            FM_TEST_FAIL_AT("%s: %s", fm_arch_name(arch), fm_last_error());
            return;
        }
        submit_all(&f, fm_arch_name(arch));
        fixture_close(&f);
    }
}

typedef struct thread_arg {
    fixture_t *f;
    int first;
    atomic_int *mismatches;
    atomic_int *errors;
} thread_arg_t;

static void *infer_thread(void *p) {
    thread_arg_t *t = p;
    for (int k = 0; k < NBATCH; k++) {
        int i = (t->first + k) % NBATCH;
        fm_gpu_out_t o;
        fm_gpu_out_alloc(&o, batch_size(i));
        fm_batch_t b = fm_gpu_batch(t->f->px + t->f->offsets[i] * FM_IMAGE_PIXELS, &o);
        if (fm_engine_infer(&t->f->e, t->f->bm, &b) != 0)
            atomic_fetch_add(t->errors, 1);
        else if (!same_outputs(&o, &t->f->expect[i]))
            atomic_fetch_add(t->mismatches, 1);
        fm_gpu_out_free(&o);
    }
    return NULL;
}

static void test_threads_infer(void) {
    const char *skip = fm_gpu_skip_reason();
    if (skip)
        FM_TEST_SKIP(skip);
    for (int graphs = 0; graphs < 2; graphs++) {
        fixture_t f;
        FM_REQUIRE_OK(fixture_open(&f, FM_ARCH_CNN, 3, graphs));
        atomic_int mismatches, errors;
        atomic_init(&mismatches, 0);
        atomic_init(&errors, 0);
        pthread_t th[6];
        thread_arg_t args[6];
        for (int t = 0; t < 6; t++) {
            args[t] = (thread_arg_t){.f = &f, .first = t * 7, .mismatches = &mismatches, .errors = &errors};
            FM_REQUIRE(pthread_create(&th[t], NULL, infer_thread, &args[t]) == 0);
        }
        for (int t = 0; t < 6; t++)
            pthread_join(th[t], NULL);
        FM_CHECK_EQ(atomic_load(&errors), 0);
        FM_CHECK_EQ(atomic_load(&mismatches), 0);
        printf("    6 threads x %d infers on 3 streams, graphs %s: identical to one thread\n", NBATCH,
               graphs ? "on" : "off");
        fixture_close(&f);
    }
}

/* CUDA graphs replay the captured work: same results as eager execution. */
static void test_graphs_match_eager(void) {
    const char *skip = fm_gpu_skip_reason();
    if (skip)
        FM_TEST_SKIP(skip);
    for (int a = 0; a < 2; a++) {
        fixture_t with, without;
        fm_arch_t arch = a ? FM_ARCH_CNN : FM_ARCH_MLP;
        FM_REQUIRE_OK(fixture_open(&with, arch, 2, 1));
        FM_REQUIRE_OK(fixture_open(&without, arch, 2, 0));
        fm_cuda_model_info_t iw, io;
        FM_CHECK_OK(fm_cuda_model_info(with.bm, &iw));
        FM_CHECK_OK(fm_cuda_model_info(without.bm, &io));
        FM_CHECK_EQ(iw.graphs, 1);
        FM_CHECK_EQ(io.graphs, 0);
        for (int i = 0; i < NBATCH; i++) {
            fm_gpu_cmp_t c = fm_gpu_compare(&with.expect[i], &without.expect[i], 1e-6);
            if (c.max_abs > 1e-6 || c.label_diff)
                FM_TEST_FAIL_AT("%s batch %d: graphs and eager differ by %.3g (%zu classes)", fm_arch_name(arch), i,
                                c.max_abs, c.label_diff);
        }
        fixture_close(&with);
        fixture_close(&without);
    }
}

/* max_batch 100: buckets 1..64 and 100; a batch of 1000 runs as ten chunks. */
static void test_odd_max_batch(void) {
    const char *skip = fm_gpu_skip_reason();
    if (skip)
        FM_TEST_SKIP(skip);
    fm_engine_t e;
    fm_backend_config_t cfg = fm_gpu_config(FM_PRECISION_FP32, 100, 2, 1);
    FM_REQUIRE_OK(fm_engine_open("cuda", &cfg, &e));
    fm_model_t *m = fm_gpu_random_model(FM_ARCH_MLP, 41);
    fm_backend_model_t *bm = NULL;
    FM_REQUIRE_OK(fm_engine_prepare(&e, m, &bm));
    fm_cuda_model_info_t info;
    FM_CHECK_OK(fm_cuda_model_info(bm, &info));
    FM_CHECK_EQ(info.nbuckets, 8);
    FM_CHECK_EQ(info.buckets[info.nbuckets - 1], 100);
    uint8_t *px = fm_gpu_images(1000, 0, NULL);
    fm_gpu_out_t all, one;
    fm_gpu_out_alloc(&all, 1000);
    fm_gpu_out_alloc(&one, 1);
    fm_batch_t b = fm_gpu_batch(px, &all);
    FM_CHECK_OK(fm_engine_infer(&e, bm, &b));
    /* Image 777 alone (bucket 1) against its row in the split batch. */
    fm_batch_t b1 = fm_gpu_batch(px + 777 * FM_IMAGE_PIXELS, &one);
    FM_CHECK_OK(fm_engine_infer(&e, bm, &b1));
    fm_gpu_out_t row = {.n = 1, .probs = all.probs + 777 * FM_NUM_CLASSES, .labels = all.labels + 777, .conf = all.conf + 777};
    fm_gpu_cmp_t c = fm_gpu_compare(&one, &row, 1e-4);
    fm_gpu_check_cmp("image 777 alone vs in a split batch of 1000", &c, (fm_gpu_tol_t){1e-4, 1e-5});
    fm_gpu_out_free(&all);
    fm_gpu_out_free(&one);
    free(px);
    fm_engine_release(&e, bm);
    fm_engine_close(&e);
    fm_model_free(m);
}

/* release() waits for the model's batches still in flight. */
static void test_release_waits(void) {
    const char *skip = fm_gpu_skip_reason();
    if (skip)
        FM_TEST_SKIP(skip);
    fixture_t f;
    FM_REQUIRE_OK(fixture_open(&f, FM_ARCH_CNN, 2, 1));
    pending_t pend;
    memset(&pend, 0, sizeof pend);
    pthread_mutex_init(&pend.mu, NULL);
    pthread_cond_init(&pend.cv, NULL);
    pend.remaining = 8;
    slot_t slots[8];
    fm_gpu_out_t outs[8];
    for (int i = 0; i < 8; i++) {
        fm_gpu_out_alloc(&outs[i], 600);
        slots[i] = (slot_t){.pend = &pend, .index = i};
        slots[i].batch = fm_gpu_batch(f.px, &outs[i]);
        FM_CHECK_OK(fm_engine_submit(&f.e, f.bm, &slots[i].batch, on_done, &slots[i]));
    }
    fm_engine_release(&f.e, f.bm);
    f.bm = NULL;
    pthread_mutex_lock(&pend.mu);
    int left = pend.remaining; /* release returned: every batch has finished its work */
    pthread_mutex_unlock(&pend.mu);
    /* `done` may still be running on the callback thread; wait for it. */
    pthread_mutex_lock(&pend.mu);
    while (pend.remaining > 0)
        pthread_cond_wait(&pend.cv, &pend.mu);
    pthread_mutex_unlock(&pend.mu);
    printf("    release returned with %d of 8 completions still being delivered\n", left);
    for (int i = 0; i < 8; i++) {
        FM_CHECK_EQ(pend.status[i], 0);
        FM_CHECK(outs[i].labels[599] >= 0 && outs[i].labels[599] < 10);
        fm_gpu_out_free(&outs[i]);
    }
    fixture_close(&f);
}

static int g_called;
static void never(fm_batch_t *b, int s, void *u) {
    (void)b;
    (void)s;
    (void)u;
    g_called++;
}

static void test_submit_refusals(void) {
    const char *skip = fm_gpu_skip_reason();
    if (skip)
        FM_TEST_SKIP(skip);
    fixture_t f;
    FM_REQUIRE_OK(fixture_open(&f, FM_ARCH_MLP, 2, 1));
    fm_gpu_out_t o;
    fm_gpu_out_alloc(&o, 4);
    fm_batch_t b = fm_gpu_batch(f.px, &o);
    b.n = 0;
    FM_CHECK_ERR(fm_engine_submit(&f.e, f.bm, &b, never, NULL), FM_EINVAL);
    b.n = 4;
    b.probs = NULL;
    FM_CHECK_ERR(f.e.ops->submit(f.bm, &b, never, NULL), FM_EINVAL);
    b.probs = o.probs;
    FM_CHECK_ERR(f.e.ops->submit(f.bm, &b, NULL, NULL), FM_EINVAL);
    FM_CHECK_EQ(g_called, 0);
    fm_gpu_out_free(&o);
    fixture_close(&f);
}

FM_TEST_MAIN({"submit_matches_infer", test_submit_matches_infer}, {"threads_infer", test_threads_infer},
             {"graphs_match_eager", test_graphs_match_eager}, {"odd_max_batch", test_odd_max_batch},
             {"release_waits", test_release_waits}, {"submit_refusals", test_submit_refusals})
