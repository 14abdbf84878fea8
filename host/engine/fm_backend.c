/* fm_backend.c: the shared layer over compute backends: lookup, "auto"
 * selection, and the fallbacks for optional slots. */
#include "fm_backend.h"

#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "fm_error.h"
#include "fm_log.h"

static const char *precision_names[] = {"fp32", "tf32", "fp16", "bf16"};

const char *fm_precision_name(fm_precision_t p) {
    return (unsigned)p < 4 ? precision_names[p] : "?";
}

int fm_precision_parse(const char *s, fm_precision_t *out) {
    for (int i = 0; i < 4; i++)
        if (s && strcmp(s, precision_names[i]) == 0) {
            *out = (fm_precision_t)i;
            return 0;
        }
    return fm_fail(FM_EINVAL, "unknown precision '%s' (expected fp32, tf32, fp16 or bf16)", s ? s : "");
}

void fm_backend_config_default(fm_backend_config_t *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->threads = 0;
    cfg->streams = 2;
    cfg->device = 0;
    cfg->max_batch = 256;
    cfg->precision = FM_PRECISION_FP32;
    cfg->cuda_graphs = 1;
}

static const fm_backend_ops_t *const all_backends[] = {
#ifdef FM_HAVE_CUDA
    &fm_backend_cuda_ops,
#endif
    &fm_backend_cpu_ops,
};

const fm_backend_ops_t *fm_backend_lookup(const char *name) {
    for (size_t i = 0; i < sizeof all_backends / sizeof all_backends[0]; i++)
        if (name && strcmp(all_backends[i]->name, name) == 0)
            return all_backends[i];
    return NULL;
}

int fm_backend_select(const char *choice, const fm_backend_ops_t **out) {
    if (!choice || strcmp(choice, "auto") == 0) {
#ifdef FM_HAVE_CUDA
        int rc = fm_backend_cuda_ops.probe();
        if (rc == 0) {
            *out = &fm_backend_cuda_ops;
            return 0;
        }
        fm_info("backend", "auto: no usable GPU (%s); using the CPU engine", fm_last_error());
#else
        fm_info("backend", "auto: built without CUDA; using the CPU engine");
#endif
        *out = &fm_backend_cpu_ops;
        return 0;
    }
    const fm_backend_ops_t *ops = fm_backend_lookup(choice);
    if (!ops) {
        if (strcmp(choice, "cuda") == 0)
            return fm_fail(FM_EUNSUPPORTED, "backend 'cuda' was not built (no nvcc/cuDNN at build time)");
        return fm_fail(FM_EINVAL, "unknown backend '%s' (expected auto, cpu or cuda)", choice);
    }
    if (ops->probe) {
        int rc = ops->probe();
        if (rc != 0)
            return rc;
    }
    *out = ops;
    return 0;
}

int fm_engine_open(const char *choice, const fm_backend_config_t *cfg, fm_engine_t *out) {
    memset(out, 0, sizeof *out);
    const fm_backend_ops_t *ops = NULL; /* set on every 0 return; GCC cannot tell with CUDA built in */
    int rc = fm_backend_select(choice, &ops);
    if (rc)
        return rc;
    fm_backend_config_t defaults;
    if (!cfg) {
        fm_backend_config_default(&defaults);
        cfg = &defaults;
    }
    rc = ops->create(cfg, &out->backend);
    if (rc)
        return rc;
    out->ops = ops;
    return 0;
}

void fm_engine_close(fm_engine_t *e) {
    if (e->ops && e->backend)
        e->ops->destroy(e->backend);
    e->ops = NULL;
    e->backend = NULL;
}

int fm_engine_prepare(fm_engine_t *e, const fm_model_t *m, fm_backend_model_t **out) {
    return e->ops->prepare(e->backend, m, out);
}

void fm_engine_release(fm_engine_t *e, fm_backend_model_t *bm) {
    if (bm)
        e->ops->release(bm);
}

int fm_engine_infer(fm_engine_t *e, fm_backend_model_t *bm, fm_batch_t *batch) {
    if (!batch || batch->n == 0 || !batch->pixels || !batch->probs || !batch->labels || !batch->confidence)
        return fm_fail(FM_EINVAL, "infer: empty batch or missing output buffer");
    return e->ops->infer(bm, batch);
}

int fm_engine_submit(fm_engine_t *e, fm_backend_model_t *bm, fm_batch_t *batch, fm_batch_done_fn done, void *user) {
    if (!e->ops->submit)
        return fm_fail(FM_EUNSUPPORTED, "backend '%s' has no asynchronous submit", e->ops->name);
    if (!batch || batch->n == 0 || !done)
        return fm_fail(FM_EINVAL, "submit: empty batch or no completion callback");
    return e->ops->submit(bm, batch, done, user);
}

int fm_engine_is_async(const fm_engine_t *e) { return e->ops->submit != NULL; }

void *fm_engine_host_alloc(fm_engine_t *e, size_t bytes) {
    if (e->ops->host_alloc)
        return e->ops->host_alloc(e->backend, bytes);
    /* 64-byte alignment keeps SIMD loads aligned in the CPU engine. */
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0)
        return NULL;
    return p;
}

void fm_engine_host_free(fm_engine_t *e, void *p) {
    if (!p)
        return;
    if (e->ops->host_free)
        e->ops->host_free(e->backend, p);
    else
        free(p);
}

void fm_engine_describe(fm_engine_t *e, char *buf, size_t len) {
    if (e->ops->describe)
        e->ops->describe(e->backend, buf, len);
    else
        snprintf(buf, len, "%s", e->ops->name);
}

void fm_softmax_argmax(float *x, size_t n, int32_t *labels, float *confidence) {
    for (size_t i = 0; i < n; i++) {
        float *row = x + i * FM_NUM_CLASSES;
        int best = 0;
        float mx = row[0];
        for (int k = 1; k < FM_NUM_CLASSES; k++)
            if (row[k] > mx) {
                mx = row[k];
                best = k;
            }
        float sum = 0.f;
        for (int k = 0; k < FM_NUM_CLASSES; k++) {
            row[k] = expf(row[k] - mx);
            sum += row[k];
        }
        float inv = 1.f / sum;
        for (int k = 0; k < FM_NUM_CLASSES; k++)
            row[k] *= inv;
        labels[i] = best;
        confidence[i] = row[best];
    }
}
