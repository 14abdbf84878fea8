/* fm_ref_forward.h: the plain-C reference forward pass of both architectures.
 *
 * Straight loops in double precision, written from the architecture
 * definitions in fm_model.h and nothing else, so that the CPU engine and the
 * CUDA backend can be checked against an independent implementation. */
#ifndef FM_REF_FORWARD_H
#define FM_REF_FORWARD_H

#include <stddef.h>
#include <stdint.h>

#include "fm_model.h"

/* probs: n * 10 softmax outputs; labels: n argmax (may be NULL). */
void fm_ref_forward(const fm_model_t *m, const uint8_t *pixels, size_t n, float *probs, int32_t *labels);

/* Fills every parameter with reproducible values drawn uniformly from
 * [-scale/sqrt(fan_in), scale/sqrt(fan_in)] (a Kaiming-like range), for tests
 * that need a model without training one. */
void fm_ref_random_init(fm_model_t *m, uint64_t seed, double scale);

#endif /* FM_REF_FORWARD_H */
