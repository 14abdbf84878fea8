/* fm_model.h: the two model architectures, their parameter tensors, and the
 * on-disk model format (model.safetensors + model.json in one directory).
 *
 * Parameter layouts follow PyTorch conventions so the same file loads there:
 * dense weights are [out, in]; conv weights are [out, in, kh, kw] (OIHW); the
 * CNN flattens its last feature map in C,H,W order before the first dense
 * layer. Engines that prefer other layouts reorder once at load time.
 * Inputs are uint8 pixels scaled by 1/255. See docs/model-format.md. */
#ifndef FM_MODEL_H
#define FM_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "fm_dims.h"
#include "fm_hash.h"

#define FM_MAX_DIMS 4

/* Human-readable Fashion-MNIST class names, index = label. */
extern const char *const fm_class_names[FM_NUM_CLASSES];

typedef enum { FM_ARCH_MLP = 1, FM_ARCH_CNN = 2 } fm_arch_t;

/* Parameter indices, in the order they are stored and trained. */
enum { FM_MLP_FC1_W, FM_MLP_FC1_B, FM_MLP_FC2_W, FM_MLP_FC2_B, FM_MLP_FC3_W, FM_MLP_FC3_B, FM_MLP_NPARAMS };
enum {
    FM_CNN_CONV1_W,
    FM_CNN_CONV1_B,
    FM_CNN_CONV2_W,
    FM_CNN_CONV2_B,
    FM_CNN_FC1_W,
    FM_CNN_FC1_B,
    FM_CNN_FC2_W,
    FM_CNN_FC2_B,
    FM_CNN_NPARAMS
};
#define FM_MAX_PARAMS 8

/* Layer sizes (see the table in fm_model.c for the full shapes). */
#define FM_MLP_H1 256
#define FM_MLP_H2 128
#define FM_CNN_C1 32  /* conv1 output channels, 3x3, pad 1, then 2x2 max-pool: 28 -> 14 */
#define FM_CNN_C2 64  /* conv2 output channels, 3x3, pad 1, then 2x2 max-pool: 14 -> 7 */
#define FM_CNN_FLAT (FM_CNN_C2 * 7 * 7) /* 3136 */
#define FM_CNN_H 128

typedef struct fm_param_spec {
    const char *name; /* e.g. "fc1.weight" */
    int ndim;
    int64_t shape[FM_MAX_DIMS];
} fm_param_spec_t;

const char *fm_arch_name(fm_arch_t arch); /* "mlp" / "cnn" */
/* Parses "mlp"/"cnn"; returns FM_EINVAL (with detail) for anything else. */
int fm_arch_parse(const char *name, fm_arch_t *out);
/* The parameter table of an architecture; `*count` receives its length. */
const fm_param_spec_t *fm_arch_params(fm_arch_t arch, int *count);
/* Forward-pass floating-point operations per image (multiply-add = 2). */
double fm_arch_flops(fm_arch_t arch);
/* One-line description, e.g. "MLP 784-256-128-10 ReLU". */
const char *fm_arch_summary(fm_arch_t arch);

typedef struct fm_tensor {
    const char *name;
    int ndim;
    int64_t shape[FM_MAX_DIMS];
    size_t numel;
    float *data; /* points into the model's single storage block */
} fm_tensor_t;

typedef struct fm_model fm_model_t;

/* A new model of `arch` with zeroed parameters and empty metadata. */
fm_model_t *fm_model_new(fm_arch_t arch);
/* Loads <dir>/model.safetensors and <dir>/model.json and checks: JSON syntax,
 * architecture, every tensor's presence, dtype (F32), shape and byte range,
 * finite values, and the sidecar's SHA-256 of the weights file. A refusal
 * names the file and the problem. */
int fm_model_load(const char *dir, fm_model_t **out);
/* Writes both files into `dir` (created if missing), filling in the weights'
 * SHA-256 and, when unset, created_at. Files are written to temporary names
 * and renamed, so a reader never sees half a model. */
int fm_model_save(fm_model_t *m, const char *dir);
void fm_model_free(fm_model_t *m);
/* A deep copy (parameters and metadata). */
fm_model_t *fm_model_clone(const fm_model_t *m);

fm_arch_t fm_model_arch(const fm_model_t *m);
int fm_model_param_count(const fm_model_t *m);
const fm_tensor_t *fm_model_param(const fm_model_t *m, int index);
fm_tensor_t *fm_model_param_mut(fm_model_t *m, int index);
/* Total number of parameters (floats). */
size_t fm_model_numel(const fm_model_t *m);

/* Identity: name (e.g. "fashion-mnist-mlp") and version (e.g. "v1"). */
const char *fm_model_name(const fm_model_t *m);
const char *fm_model_version(const fm_model_t *m);
void fm_model_set_identity(fm_model_t *m, const char *name, const char *version);
/* SHA-256 of model.safetensors as loaded or last saved ("" for a new model). */
const char *fm_model_weights_sha256(const fm_model_t *m);
/* Directory the model was loaded from or last saved to ("" otherwise). */
const char *fm_model_dir(const fm_model_t *m);

/* Sidecar metadata. `section` is NULL for top-level keys (created_at,
 * source_commit) or an object name ("training", "metrics", "training_data").
 * Setters create the section when missing; getters return FM_ENOTFOUND/NULL. */
int fm_model_meta_set_number(fm_model_t *m, const char *section, const char *key, double value);
int fm_model_meta_set_string(fm_model_t *m, const char *section, const char *key, const char *value);
int fm_model_meta_get_number(const fm_model_t *m, const char *section, const char *key, double *out);
const char *fm_model_meta_get_string(const fm_model_t *m, const char *section, const char *key);
/* The whole sidecar as JSON text (malloc'd; caller frees). */
char *fm_model_meta_json(const fm_model_t *m);

#endif /* FM_MODEL_H */
