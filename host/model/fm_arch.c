/* fm_arch.c: the two architectures as data: parameter tables, FLOPs, names. */
#include <string.h>

#include "fm_error.h"
#include "fm_model.h"

const char *const fm_class_names[FM_NUM_CLASSES] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

static const fm_param_spec_t mlp_params[FM_MLP_NPARAMS] = {
    [FM_MLP_FC1_W] = {"fc1.weight", 2, {FM_MLP_H1, FM_IMAGE_PIXELS}},
    [FM_MLP_FC1_B] = {"fc1.bias", 1, {FM_MLP_H1}},
    [FM_MLP_FC2_W] = {"fc2.weight", 2, {FM_MLP_H2, FM_MLP_H1}},
    [FM_MLP_FC2_B] = {"fc2.bias", 1, {FM_MLP_H2}},
    [FM_MLP_FC3_W] = {"fc3.weight", 2, {FM_NUM_CLASSES, FM_MLP_H2}},
    [FM_MLP_FC3_B] = {"fc3.bias", 1, {FM_NUM_CLASSES}},
};

static const fm_param_spec_t cnn_params[FM_CNN_NPARAMS] = {
    [FM_CNN_CONV1_W] = {"conv1.weight", 4, {FM_CNN_C1, 1, 3, 3}},
    [FM_CNN_CONV1_B] = {"conv1.bias", 1, {FM_CNN_C1}},
    [FM_CNN_CONV2_W] = {"conv2.weight", 4, {FM_CNN_C2, FM_CNN_C1, 3, 3}},
    [FM_CNN_CONV2_B] = {"conv2.bias", 1, {FM_CNN_C2}},
    [FM_CNN_FC1_W] = {"fc1.weight", 2, {FM_CNN_H, FM_CNN_FLAT}},
    [FM_CNN_FC1_B] = {"fc1.bias", 1, {FM_CNN_H}},
    [FM_CNN_FC2_W] = {"fc2.weight", 2, {FM_NUM_CLASSES, FM_CNN_H}},
    [FM_CNN_FC2_B] = {"fc2.bias", 1, {FM_NUM_CLASSES}},
};

const char *fm_arch_name(fm_arch_t arch) {
    switch (arch) {
    case FM_ARCH_MLP: return "mlp";
    case FM_ARCH_CNN: return "cnn";
    }
    return "?";
}

int fm_arch_parse(const char *name, fm_arch_t *out) {
    if (name && strcmp(name, "mlp") == 0) {
        *out = FM_ARCH_MLP;
        return 0;
    }
    if (name && strcmp(name, "cnn") == 0) {
        *out = FM_ARCH_CNN;
        return 0;
    }
    return fm_fail(FM_EINVAL, "unknown architecture '%s' (expected mlp or cnn)", name ? name : "");
}

const fm_param_spec_t *fm_arch_params(fm_arch_t arch, int *count) {
    switch (arch) {
    case FM_ARCH_MLP: *count = FM_MLP_NPARAMS; return mlp_params;
    case FM_ARCH_CNN: *count = FM_CNN_NPARAMS; return cnn_params;
    }
    *count = 0;
    return NULL;
}

double fm_arch_flops(fm_arch_t arch) {
    if (arch == FM_ARCH_MLP)
        return 2.0 * (FM_IMAGE_PIXELS * FM_MLP_H1 + FM_MLP_H1 * FM_MLP_H2 + FM_MLP_H2 * FM_NUM_CLASSES);
    /* conv1 at 28x28 and conv2 at 14x14 (both 3x3, pad 1), then the two dense layers. */
    return 2.0 * (28.0 * 28 * FM_CNN_C1 * 9 + 14.0 * 14 * FM_CNN_C2 * FM_CNN_C1 * 9 + (double)FM_CNN_FLAT * FM_CNN_H +
                  FM_CNN_H * FM_NUM_CLASSES);
}

const char *fm_arch_summary(fm_arch_t arch) {
    if (arch == FM_ARCH_MLP)
        return "MLP 784-256-128-10, ReLU";
    if (arch == FM_ARCH_CNN)
        return "CNN conv3x3x32(pad 1)+ReLU+maxpool2, conv3x3x64(pad 1)+ReLU+maxpool2, dense 3136-128+ReLU, dense 10";
    return "?";
}
