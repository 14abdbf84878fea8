/* fm_cudnn_graph.h: one fused cuDNN v9 backend graph per layer, built from
 * plain C: matmul|conv -> bias ADD -> (RELU_FWD), FLOAT compute and virtual
 * FLOAT intermediates, NHWC activations, KRSC filters, matmul tensors of
 * 3 dims. Owns the descriptor sequence (tensors, ops, graph, heuristics mode
 * A then FALLBACK, first config that finalizes wins), the numerical-note
 * filter for exact fp32, and variant packs.
 *
 * Ownership: a plan keeps every descriptor it was built from alive until
 * fm_cudnn_plan_destroy. A plan is not tied to a handle; callers must not
 * execute one plan from two threads at the same time. */
#ifndef FM_CUDNN_GRAPH_H
#define FM_CUDNN_GRAPH_H

#include <stddef.h>
#include <stdint.h>

#include <cudnn.h>

typedef enum { FM_CUDNN_MATMUL = 1, FM_CUDNN_CONV = 2 } fm_cudnn_op_t;

/* One layer: y = act(op(x, w) + b). */
typedef struct fm_cudnn_layer {
    const char *name;      /* for logs, e.g. "fc1" */
    fm_cudnn_op_t op;
    cudnnDataType_t dtype; /* storage type of x, w, b and y (FLOAT, HALF, BFLOAT16) */
    int relu;              /* ReLU after the bias add */
    /* MATMUL: x [m][k] row-major, w [k][n] row-major, b [n], y [m][n]. */
    int64_t m, k, n;
    /* CONV: x [batch][h][w][c] (NHWC), w [kout][r][s][c] (KRSC), b [kout],
     * y [batch][p][q][kout] with `pad` on every side, stride and dilation 1. */
    int64_t batch, c, h, w, kout, r, s, pad;
} fm_cudnn_layer_t;

/* Unique ids of the non-virtual tensors, which are all a variant pack binds. */
enum { FM_CUDNN_UID_X = 1, FM_CUDNN_UID_W = 2, FM_CUDNN_UID_B = 3, FM_CUDNN_UID_Y = 4 };

/* Engine policy. A config whose numerical notes intersect `avoid_notes`
 * (bit i = cudnnBackendNumericalNote_t i) is tried only when no other config
 * finalizes; the plan then records relaxed = 1. */
#define FM_CUDNN_NOTE_BIT(note) (1u << (unsigned)(note))

#define FM_CUDNN_MAX_KEEP 24

typedef struct fm_cudnn_plan {
    cudnnBackendDescriptor_t keep[FM_CUDNN_MAX_KEEP]; /* tensors, ops, graph, heuristics */
    int nkeep;
    cudnnBackendDescriptor_t cfg;  /* the winning engine config */
    cudnnBackendDescriptor_t plan; /* the finalized execution plan */
    int64_t workspace;             /* bytes */
    int64_t engine;                /* global engine index */
    unsigned numerical_notes;      /* bit set of cudnnBackendNumericalNote_t */
    unsigned behavior_notes;       /* bit set of cudnnBackendBehaviorNote_t */
    int relaxed;                   /* 1 when only an avoided engine finalized */
    int tried;                     /* configs tried before one finalized */
    char engine_desc[96];          /* e.g. "eng12[tensor_core,rtc]" */
} fm_cudnn_plan_t;

/* Output spatial size of a conv layer (the backend does not infer it). */
int64_t fm_cudnn_conv_out(int64_t in, int64_t filter, int64_t pad);

/* Builds the layer's graph and its first finalizable plan. `handle` is set
 * on the operation graph (may be NULL). `target` is an optional finalized
 * CUDNN_BACKEND_DEVICEPROP_DESCRIPTOR: heuristics and plans are then made
 * for that device instead of the current one (deviceless planning; NULL in
 * production). Returns 0, or FM_EUNSUPPORTED when no config finalizes (the
 * detail lists how many configs were tried and cuDNN's last message). */
int fm_cudnn_plan_build(cudnnHandle_t handle, cudnnBackendDescriptor_t target, const fm_cudnn_layer_t *layer,
                        unsigned avoid_notes, fm_cudnn_plan_t *out);
void fm_cudnn_plan_destroy(fm_cudnn_plan_t *p);

/* Builds the layer's graph and runs heuristics only. `ranked_*` receive how
 * many configs modes A and FALLBACK rank, `viable_*` how many of those
 * cuDNN's own support checks keep (0 for runtime-compiled engines without a
 * driver). Needs no GPU when `target` is given. */
int fm_cudnn_graph_check(cudnnHandle_t handle, cudnnBackendDescriptor_t target, const fm_cudnn_layer_t *layer,
                         int64_t *ranked_a, int64_t *ranked_fallback, int64_t *viable_a, int64_t *viable_fallback);

/* A finalized device-properties descriptor from cuDNN's JSON form (the
 * CUDNN_ATTR_DEVICEPROP_JSON_REPRESENTATION of a real device, or written by
 * hand for a device that is not present). Destroy with
 * cudnnBackendDestroyDescriptor. */
int fm_cudnn_deviceprop_from_json(const char *json, cudnnBackendDescriptor_t *out);

/* A finalized variant pack binding x, w, b, y and the workspace (NULL when the
 * plan needs none). Pointers must be 16-byte aligned. */
int fm_cudnn_varpack_create(const fm_cudnn_plan_t *p, void *x, const void *w, const void *b, void *y,
                            void *workspace, cudnnBackendDescriptor_t *out);
void fm_cudnn_varpack_destroy(cudnnBackendDescriptor_t vp);

/* One line about a layer, e.g. "fc1 matmul 256x784x256 +bias relu fp16". */
void fm_cudnn_layer_describe(const fm_cudnn_layer_t *layer, char *buf, size_t len);
const char *fm_cudnn_dtype_name(cudnnDataType_t dt);

#endif /* FM_CUDNN_GRAPH_H */
