/* fm_optim.h: parameter updates (Adam, AdamW, SGD with Nesterov momentum)
 * and the learning-rate schedule. Element-wise and split statically between
 * threads, so updates are identical for any thread count. */
#ifndef FM_OPTIM_H
#define FM_OPTIM_H

#include <stddef.h>

#include "fm_train.h"

typedef struct fm_optim fm_optim_t;

/* `numel[i]` floats per tensor; weight decay applies where `decay[i]` is set. */
fm_optim_t *fm_optim_new(const fm_train_config_t *cfg, int ntensors, const size_t *numel, const int *decay);
void fm_optim_free(fm_optim_t *o);
/* One update of every tensor from its gradient, at learning rate lr. */
void fm_optim_step(fm_optim_t *o, float *const *params, float *const *grads, double lr);
/* The rate for step `step` (0-based) of `total` steps, `per_epoch` per epoch. */
double fm_optim_lr(const fm_train_config_t *cfg, long step, long total, long per_epoch);

#endif /* FM_OPTIM_H */
