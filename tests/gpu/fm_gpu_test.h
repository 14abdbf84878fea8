/* fm_gpu_test.h: what the CUDA backend's tests share: the skip decision
 * (probe), test images and models, poisoned output buffers, and the
 * comparison of two sets of outputs against a precision's tolerance. */
#ifndef FM_GPU_TEST_H
#define FM_GPU_TEST_H

#include <stddef.h>
#include <stdint.h>

#include "fm_backend.h"
#include "fm_model.h"

/* NULL when the CUDA backend can run here; otherwise why not ("no usable
 * GPU: <driver message>"), for FM_TEST_SKIP. */
const char *fm_gpu_skip_reason(void);

/* Tolerances against the CPU engine (fp32), per precision: the largest
 * absolute difference of any probability, and of their mean. See
 * docs/gpu.md for where they come from. */
typedef struct fm_gpu_tol {
    double max_abs;
    double mean_abs;
} fm_gpu_tol_t;
fm_gpu_tol_t fm_gpu_tolerance(fm_precision_t p);

/* Outputs of one run over n images. */
typedef struct fm_gpu_out {
    size_t n;
    float *probs;
    int32_t *labels;
    float *conf;
} fm_gpu_out_t;

/* Allocates (malloc) outputs filled with poison (NaN, label -1). */
void fm_gpu_out_alloc(fm_gpu_out_t *o, size_t n);
void fm_gpu_out_poison(fm_gpu_out_t *o);
void fm_gpu_out_free(fm_gpu_out_t *o);
/* A batch over `pixels` writing into `o`. */
fm_batch_t fm_gpu_batch(const uint8_t *pixels, fm_gpu_out_t *o);

typedef struct fm_gpu_cmp {
    double max_abs, mean_abs;
    size_t label_diff;       /* images whose classes differ */
    size_t label_diff_close; /* ... of which the reference's top two were within 2*max_abs */
    size_t invalid;          /* NaN/out-of-range outputs, wrong confidence, sums far from 1 */
} fm_gpu_cmp_t;

/* Compares `got` with the reference `ref` (same n). */
fm_gpu_cmp_t fm_gpu_compare(const fm_gpu_out_t *got, const fm_gpu_out_t *ref, double tol);
/* Checks a comparison: max/mean within `tol`, every class difference a near
 * tie, nothing invalid. Prints a one-line summary under `what`; counts a
 * failure through the test runner. */
void fm_gpu_check_cmp(const char *what, const fm_gpu_cmp_t *c, fm_gpu_tol_t tol);

/* n images: the fixture test images (or $FM_DATA's when `full` and set),
 * repeated cyclically up to n. Caller frees. NULL with the reason printed. */
uint8_t *fm_gpu_images(size_t n, int full, size_t *available);
/* n images of fresh uniform random bytes. Caller frees. */
uint8_t *fm_gpu_random_images(size_t n, uint64_t seed);

/* A model of `arch` with reproducible random weights. */
fm_model_t *fm_gpu_random_model(fm_arch_t arch, uint64_t seed);
/* The shipped model for `arch` (models/v1 for the MLP, models/v2 for the
 * CNN) when present in the source tree, else NULL. */
fm_model_t *fm_gpu_shipped_model(fm_arch_t arch);

/* A backend configuration for tests. */
fm_backend_config_t fm_gpu_config(fm_precision_t p, int max_batch, int streams, int graphs);

#endif /* FM_GPU_TEST_H */
