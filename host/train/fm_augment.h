/* fm_augment.h: turns a mini-batch of stored images into the network's
 * float input, with the optional training-time augmentation (small random
 * translations and horizontal flips; Fashion-MNIST's garments are left/right
 * symmetric, so a flip yields a plausible image of the same class). */
#ifndef FM_AUGMENT_H
#define FM_AUGMENT_H

#include <stddef.h>
#include <stdint.h>

#include "fm_rng.h"

/* x[i][side*side] = pixels[idx[i]] / 255 for i < n. With shift > 0 each image
 * moves by (dx, dy) drawn uniformly from [-shift, shift] (vacated pixels are
 * 0); with hflip each image is mirrored with probability 1/2. All random
 * draws come from rng in image order, before any parallel work, so the
 * result does not depend on the thread count. rng may be NULL when both are
 * off. Returns 0 or FM_ENOMEM. */
int fm_augment_gather(const uint8_t *pixels, const size_t *idx, int n, int side, float *x, int shift, int hflip,
                      fm_rng_t *rng);

#endif /* FM_AUGMENT_H */
