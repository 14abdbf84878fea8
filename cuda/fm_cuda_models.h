/* fm_cuda_models.h: the two architectures as the CUDA backend runs them: a
 * list of steps (pixel conversion, cuDNN layers, max-pools, softmax) over two
 * ping-pong activation buffers, the cuDNN layer shapes per batch size, and
 * the weights reordered from fm_model.h's PyTorch layouts into the layouts
 * the graphs bind (row-major [in][out] for dense layers, KRSC for convs, the
 * CNN's fc1 columns permuted from C,H,W to the H,W,C order of NHWC).
 * Plain C with no CUDA calls: the layouts are unit-testable on any machine. */
#ifndef FM_CUDA_MODELS_H
#define FM_CUDA_MODELS_H

#include <stddef.h>
#include <stdint.h>

#include "fm_backend.h"
#include "fm_cuda_kernels.h"
#include "fm_cudnn_graph.h"
#include "fm_model.h"

#define FM_CUDA_MAX_LAYERS 4
#define FM_CUDA_MAX_STEPS 10
/* Logits rows are padded from 10 to 16 columns (zero weights and biases):
 * 16-byte aligned rows in every storage type, as half-precision engines want. */
#define FM_CUDA_LOGITS_LD 16

typedef enum {
    FM_STEP_INPUT = 1, /* u8 pixels -> T input, scaled by 1/255, C padded */
    FM_STEP_LAYER,     /* one cuDNN graph */
    FM_STEP_POOL,      /* 2x2 max-pool, NHWC */
    FM_STEP_SOFTMAX    /* logits -> probs, labels, confidence */
} fm_cuda_step_kind_t;

/* Activation buffers: two per (model, stream), each sized for the largest
 * activation written to it. */
enum { FM_CUDA_BUF_A = 0, FM_CUDA_BUF_B = 1 };

typedef struct fm_cuda_step {
    fm_cuda_step_kind_t kind;
    int layer;       /* FM_STEP_LAYER: index into layers[] */
    int src, dst;    /* activation buffers (INPUT reads the pixels; SOFTMAX writes the outputs) */
    int h, w, c;     /* FM_STEP_POOL: input size, NHWC */
    size_t dst_elems; /* elements of T per image written to dst (0 for SOFTMAX) */
} fm_cuda_step_t;

typedef struct fm_cuda_layer_spec {
    fm_cudnn_layer_t shape; /* batch-size fields (m / batch) are set per bucket */
    int w_param, b_param;   /* fm_model parameter indices */
    size_t w_elems, b_elems; /* device elements, after padding */
} fm_cuda_layer_spec_t;

typedef struct fm_cuda_net {
    fm_arch_t arch;
    fm_cuda_dtype_t dtype;
    int in_channels; /* channels of the converted input (1 for the MLP) */
    int nlayers;
    fm_cuda_layer_spec_t layers[FM_CUDA_MAX_LAYERS];
    int nsteps;
    fm_cuda_step_t steps[FM_CUDA_MAX_STEPS];
    size_t buf_elems[2]; /* per image, for FM_CUDA_BUF_A / _B */
} fm_cuda_net_t;

cudnnDataType_t fm_cuda_dtype_cudnn(fm_cuda_dtype_t dt);
const char *fm_cuda_dtype_name(fm_cuda_dtype_t dt);

/* Fills `net` for an architecture. `in_channels` pads the CNN's single input
 * channel (1, 2, 4 or 8); the MLP takes 1. */
int fm_cuda_net_init(fm_cuda_net_t *net, fm_arch_t arch, fm_cuda_dtype_t dt, int in_channels);

/* The cuDNN shape of layer `i` for a batch of `batch` images. */
fm_cudnn_layer_t fm_cuda_net_layer_shape(const fm_cuda_net_t *net, int i, int64_t batch);

/* Checks the model's parameter shapes against the network (FM_ESHAPE naming
 * the tensor otherwise). */
int fm_cuda_net_check_model(const fm_cuda_net_t *net, const fm_model_t *m);

/* Layer `i`'s weights and bias in device layout, as fp32 (w_elems and b_elems
 * floats; padding is zero). */
void fm_cuda_net_layer_weights(const fm_cuda_net_t *net, const fm_model_t *m, int i, float *w, float *b);

/* The CPU twin of the device pipeline: runs `net`'s steps on the host with
 * the same reordered weights, padding and buffers, rounding storage to the
 * net's type (fp16/bf16) and, for FM_PRECISION_TF32, the matmul and conv
 * operands to TF32, with fp32 accumulation. Slow (plain loops): for tests
 * that check the layouts and estimate each precision's error without a GPU.
 * Outputs as in fm_batch_t. Returns FM_ENOMEM or 0. */
int fm_cuda_net_forward_host(const fm_cuda_net_t *net, const fm_model_t *m, fm_precision_t precision,
                             const uint8_t *pixels, size_t n, float *probs, int32_t *labels, float *confidence);

/* Rounds to the nearest fp16 / bf16 / tf32 value (ties to even), as float. */
float fm_cuda_round_f16(float x);
float fm_cuda_round_bf16(float x);
float fm_cuda_round_tf32(float x);

#endif /* FM_CUDA_MODELS_H */
