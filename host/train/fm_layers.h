/* fm_layers.h: the trainer's layers, each a forward and a backward function
 * parametrised by its sizes, so the same code trains the served networks and
 * the tiny ones of the gradient check.
 *
 * Activations are batch-major and channels-last (NHWC): a convolution is then
 * one GEMM over every output pixel of the batch. Parameters keep the PyTorch
 * layouts of fm_model.h (dense [out][in], conv OIHW); the CNN's flatten
 * produces PyTorch's C,H,W order. Backward functions overwrite (never
 * accumulate into) the gradients they produce. Functions returning int return
 * 0 or the GEMM's error. */
#ifndef FM_LAYERS_H
#define FM_LAYERS_H

#include <stddef.h>
#include <stdint.h>

#include "fm_rng.h"

/* ---- dense: y[n][out] = x[n][in] . W[out][in]^T + b[out] ---- */
int fm_dense_forward(const float *x, const float *w, const float *b, float *y, int n, int in, int out);
/* dW = dy^T . x, db = column sums of dy, dx = dy . W (dx may be NULL: the
 * first layer needs no input gradient). */
int fm_dense_backward(const float *x, const float *w, const float *dy, float *dx, float *dw, float *db, int n, int in,
                      int out);

/* ---- ReLU, in place on y; backward masks dy where the output was 0 ----
 * (The CNN applies it after each max-pool: max and ReLU commute, so the
 * network computes exactly PyTorch's conv-ReLU-pool on a 4x smaller tensor.) */
void fm_relu_forward(float *y, size_t count);
void fm_relu_backward(const float *y, float *dy, size_t count);

/* ---- 3x3 convolution, stride 1, zero padding 1, via im2col + GEMM ----
 * x [n][h][w][cin] -> y [n][h][w][cout]. The GEMM wants the weights in the
 * order of an im2col row (ky, kx, ci): fm_conv3x3_pack reorders the OIHW
 * tensor [cout][cin][3][3] into wpack [cout][9*cin] once per step, and
 * fm_conv3x3_unpack turns a packed gradient back into OIHW.
 * col (and dcol) are scratch of fm_conv3x3_col_floats(n, h, w, cin) floats.
 * Callers run these on small groups of images so that col stays in cache. */
size_t fm_conv3x3_col_floats(int n, int h, int w, int cin);
void fm_conv3x3_pack(const float *wt, float *wpack, int cin, int cout);
void fm_conv3x3_unpack(const float *wpack, float *wt, int cin, int cout);
int fm_conv3x3_forward(const float *x, const float *wpack, const float *b, float *y, float *col, int n, int h, int w,
                       int cin, int cout);
/* From the input x (im2col is recomputed into col rather than kept from the
 * forward pass) and the output gradient dy: the packed weight gradient
 * dwpack [cout][9*cin], db [cout] and, when dx is not NULL, dx (through
 * dcol). With `accumulate` the weight and bias gradients are added to what
 * dwpack and db hold (to sum over groups of images); dx is always written. */
int fm_conv3x3_backward(const float *x, const float *wpack, const float *dy, float *dx, float *dwpack, float *db,
                        float *col, float *dcol, int n, int h, int w, int cin, int cout, int accumulate);

/* ---- 2x2 max-pool, stride 2 (h and w even) ----
 * x [n][h][w][c] -> y [n][h/2][w/2][c]; arg records which of the four inputs
 * won (0..3, the first on ties) for backward, which routes dy there and
 * writes zeros elsewhere in dx. */
void fm_maxpool2_forward(const float *x, float *y, uint8_t *arg, int n, int h, int w, int c);
void fm_maxpool2_backward(const uint8_t *arg, const float *dy, float *dx, int n, int h, int w, int c);

/* ---- flatten NHWC [n][hw][c] into PyTorch's C,H,W order [n][c*hw], and back ---- */
void fm_flatten_chw_forward(const float *x, float *y, int n, int hw, int c);
void fm_flatten_chw_backward(const float *dy, float *dx, int n, int hw, int c);

/* ---- inverted dropout, in place: each value is zeroed with probability p
 * and the survivors scaled by 1/(1-p); mask keeps the factor (0 or 1/(1-p)). */
void fm_dropout_forward(float *y, float *mask, size_t count, float p, fm_rng_t *rng);
void fm_dropout_backward(const float *mask, float *dy, size_t count);

/* ---- softmax cross-entropy over k classes ----
 * Forward writes probs and returns the summed loss -log p[label] (computed in
 * log space, so it stays finite); *correct (when not NULL) is increased by the
 * number of argmax hits. labels may be NULL for a forward without a loss. */
double fm_softmax_xent_forward(const float *logits, const uint8_t *labels, float *probs, int n, int k, int *correct);
/* dlogits = (probs - onehot(label)) * scale; scale = 1/n for a mean loss. */
void fm_softmax_xent_backward(const float *probs, const uint8_t *labels, float *dlogits, int n, int k, float scale);

#endif /* FM_LAYERS_H */
