/* fm_augment.c: mini-batch gathering and augmentation (see fm_augment.h). */
#include "fm_augment.h"

#include <stdlib.h>

#include "fm_error.h"

int fm_augment_gather(const uint8_t *pixels, const size_t *idx, int n, int side, float *x, int shift, int hflip,
                      fm_rng_t *rng) {
    const size_t px = (size_t)side * side;
    const int augment = (shift > 0 || hflip) && rng;
    /* Per-image transform (dx, dy, flip), drawn first and sequentially. */
    int8_t(*tf)[3] = NULL;
    if (augment && !(tf = malloc(sizeof *tf * (size_t)n)))
        return fm_fail(FM_ENOMEM, "augment: out of memory for %d transforms", n);
    for (int i = 0; augment && i < n; i++) {
        tf[i][0] = shift > 0 ? (int8_t)((int)fm_rng_below(rng, (uint64_t)(2 * shift + 1)) - shift) : 0;
        tf[i][1] = shift > 0 ? (int8_t)((int)fm_rng_below(rng, (uint64_t)(2 * shift + 1)) - shift) : 0;
        tf[i][2] = hflip ? (int8_t)(fm_rng_next(rng) >> 63) : 0;
    }
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        const uint8_t *src = pixels + idx[i] * px;
        float *dst = x + (size_t)i * px;
        if (!augment) {
            for (size_t p = 0; p < px; p++)
                dst[p] = (float)src[p] / 255.0f;
            continue;
        }
        const int dx = tf[i][0], dy = tf[i][1], flip = tf[i][2];
        /* Output pixel (y, x) shows source pixel (y - dy, x' - dx), where x'
         * is x mirrored when flipping. */
        for (int y = 0; y < side; y++)
            for (int xx = 0; xx < side; xx++) {
                int sy = y - dy, sx = (flip ? side - 1 - xx : xx) - dx;
                dst[(size_t)y * side + xx] =
                    sy < 0 || sy >= side || sx < 0 || sx >= side ? 0.0f
                                                                 : (float)src[(size_t)sy * side + sx] / 255.0f;
            }
    }
    free(tf);
    return 0;
}
