/* fm_net.h: the two trainable networks (MLP and CNN of fm_model.h) composed
 * from the layers of fm_layers.h, with sizes as parameters so the gradient
 * check can build tiny copies of exactly the code that trains the served
 * models.
 *
 * A net owns the activation buffers of one batch (up to max_batch images);
 * parameters and gradients are arrays of pointers in fm_model.h's parameter
 * order (weight then bias, layer by layer), owned by the caller. */
#ifndef FM_NET_H
#define FM_NET_H

#include <stddef.h>
#include <stdint.h>

#include "fm_model.h"
#include "fm_rng.h"

typedef struct fm_net_shape {
    fm_arch_t arch;
    int side;    /* input images are side x side, one channel */
    int classes; /* outputs */
    int h1, h2;  /* MLP: the two hidden widths */
    int c1, c2;  /* CNN: channels of the two 3x3 convolutions (each followed by a 2x2 max-pool) */
    int hidden;  /* CNN: width of the hidden dense layer */
} fm_net_shape_t;

/* The sizes of the served architecture `arch`. */
void fm_net_shape_of(fm_arch_t arch, fm_net_shape_t *s);
/* FM_EINVAL (with a detail) for sizes the layers cannot take. */
int fm_net_shape_check(const fm_net_shape_t *s);
/* Number of parameter tensors (6 or 8), and each one's element count and
 * fan-in (inputs per output unit; 0 for a bias). */
int fm_net_param_count(const fm_net_shape_t *s);
void fm_net_param_size(const fm_net_shape_t *s, int index, size_t *numel, int *fan_in);

typedef struct fm_net fm_net_t;

fm_net_t *fm_net_new(const fm_net_shape_t *s, int max_batch);
void fm_net_free(fm_net_t *net);

/* Forward pass over n <= max_batch images x[n][side*side] (pixels scaled to
 * [0,1]). dropout > 0 (with rng) drops hidden dense activations: training
 * mode. With labels, returns the summed cross-entropy in *loss_sum and adds the
 * argmax hits to *correct (either may be NULL). Returns 0 or an error. */
int fm_net_forward(fm_net_t *net, float *const *params, const float *x, int n, const uint8_t *labels, float dropout,
                   fm_rng_t *rng, double *loss_sum, int *correct);
/* Softmax outputs [n][classes] of the last forward. */
const float *fm_net_probs(const fm_net_t *net);
/* Gradients of the mean cross-entropy of the last forward (same n, labels)
 * with respect to every parameter, written (not added) into grads. */
int fm_net_backward(fm_net_t *net, float *const *params, float *const *grads, const float *x, const uint8_t *labels,
                    int n);
/* Dropout factors (0 or 1/(1-p)) of the last training forward for hidden
 * dense layer `layer` (0-based), or NULL when dropout was off; for tests. */
const float *fm_net_dropout_mask(const fm_net_t *net, int layer);

#endif /* FM_NET_H */
