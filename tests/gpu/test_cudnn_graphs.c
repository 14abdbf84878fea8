/* test_cudnn_graphs.c: the cuDNN backend descriptor sequences of every layer
 * of both networks, against the installed cuDNN library. Needs no GPU: the
 * graphs are planned for an H200 described by device properties (cuDNN's
 * deviceless planning), so heuristics rank real sm_90 engines, and the conv
 * layers, whose engines are precompiled, even finalize execution plans. With
 * a GPU, every layer's plan is also built for the device present. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_cuda_models.h"
#include "fm_cudnn_graph.h"
#include "fm_gpu_test.h"
#include "fm_test.h"

/* An H200 SXM as cuDNN's device-properties JSON (fields read from
 * libcudnn_graph; values from the H200 datasheet and CUDA's sm_90 limits). */
static const char *k_h200 =
    "{\"cudnnVersion\":91900,\"deviceVer\":900,\"driverVer\":13000,\"multiProcessorCount\":132,"
    "\"maxGridSize\":[2147483647,65535,65535],\"maxBlockSize\":[1024,1024,64],\"regsPerBlock\":65536,"
    "\"warpSize\":32,\"maxSharedMemoryPerBlock\":49152,\"maxSharedMemoryPerBlockOptin\":232448,"
    "\"reservedSharedMemoryPerBlock\":1024,\"maxRegistersPerSM\":65536,\"maxCtasPerSM\":32,"
    "\"maxThreadsPerBlock\":1024,\"maxThreadsPerSM\":2048,\"pciDeviceId\":0,\"isTccDriver\":0,"
    "\"supportCoopLaunch\":1,\"totalGlobalMem\":150754820096,\"smClockRateKHz\":1980000,"
    "\"memClockRateKHz\":3201000,\"l2CacheSize\":62914560,\"cudaDeviceId\":0,\"deviceName\":\"NVIDIA H200\"}";

static cudnnBackendDescriptor_t h200(void) {
    cudnnBackendDescriptor_t d = NULL;
    if (cudnnGetVersion() < 91100 || fm_cudnn_deviceprop_from_json(k_h200, &d) != 0)
        return NULL;
    return d;
}

/* In sanitizer builds: cuDNN's heuristics for runtime-compiled engines load
 * and unload libraries whose static allocations LeakSanitizer then reports
 * (about 72 KB per query, in modules it can no longer name, so they cannot
 * be suppressed by name). They are cuDNN's, not fmserve's: ASan and UBSan
 * still check everything else in this test. */
const char *__lsan_default_options(void);
const char *__lsan_default_options(void) { return "detect_leaks=0"; }

static const fm_cuda_dtype_t k_dtypes[] = {FM_CUDA_F32, FM_CUDA_F16, FM_CUDA_BF16};
static const int64_t k_batches[] = {1, 3, 256, 8192};

/* Every layer of both nets, every storage type, several batch sizes: the
 * tensors, ops and graph finalize and heuristics rank engines for sm_90. */
static void test_graphs_rank_engines_for_h200(void) {
    cudnnBackendDescriptor_t target = h200();
    if (!target)
        FM_TEST_SKIP("this cuDNN cannot plan for a device by properties (needs 9.11 or newer)");
    for (int a = 0; a < 2; a++)
        for (int d = 0; d < 3; d++) {
            fm_cuda_net_t net;
            int ch = a == 0 ? 1 : k_dtypes[d] == FM_CUDA_F32 ? 1 : 8;
            FM_REQUIRE_OK(fm_cuda_net_init(&net, a == 0 ? FM_ARCH_MLP : FM_ARCH_CNN, k_dtypes[d], ch));
            for (int l = 0; l < net.nlayers; l++)
                for (int bi = 0; bi < 4; bi++) {
                    fm_cudnn_layer_t s = fm_cuda_net_layer_shape(&net, l, k_batches[bi]);
                    int64_t ra, rf, va, vf;
                    char what[192];
                    fm_cudnn_layer_describe(&s, what, sizeof what);
                    int rc = fm_cudnn_graph_check(NULL, target, &s, &ra, &rf, &va, &vf);
                    if (rc)
                        FM_TEST_FAIL_AT("%s: %s", what, fm_last_error());
                    else if (ra + rf <= 0)
                        FM_TEST_FAIL_AT("%s: heuristics ranked no engine for sm_90", what);
                    if (bi == 2)
                        printf("    %-70s ranked %lld+%lld, viable without a driver %lld+%lld\n", what, (long long)ra,
                               (long long)rf, (long long)va, (long long)vf);
                }
        }
    cudnnBackendDestroyDescriptor(target);
}

/* Conv engines are precompiled, so their plans finalize without a driver:
 * the whole plan search (heuristics, numerical-note filter, plan, workspace)
 * runs here for conv1 and conv2. fp32 must find an engine free of
 * tensor-core / down-converting notes. */
static void test_conv_plans_finalize_for_h200(void) {
    cudnnBackendDescriptor_t target = h200();
    if (!target)
        FM_TEST_SKIP("this cuDNN cannot plan for a device by properties (needs 9.11 or newer)");
    const unsigned rpr = FM_CUDNN_NOTE_BIT(CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION);
    const unsigned exact = rpr | FM_CUDNN_NOTE_BIT(CUDNN_NUMERICAL_NOTE_TENSOR_CORE) |
                           FM_CUDNN_NOTE_BIT(CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS);
    int planned = 0;
    for (int d = 0; d < 3; d++) {
        fm_cuda_net_t net;
        FM_REQUIRE_OK(fm_cuda_net_init(&net, FM_ARCH_CNN, k_dtypes[d], k_dtypes[d] == FM_CUDA_F32 ? 1 : 8));
        for (int l = 0; l < 2; l++)
            for (int bi = 0; bi < 4; bi += 2) {
                fm_cudnn_layer_t s = fm_cuda_net_layer_shape(&net, l, k_batches[bi]);
                char what[192];
                fm_cudnn_layer_describe(&s, what, sizeof what);
                fm_cudnn_plan_t p;
                int rc = fm_cudnn_plan_build(NULL, target, &s, k_dtypes[d] == FM_CUDA_F32 ? exact : rpr, &p);
                if (rc && strstr(fm_last_error(), "(3008)") && planned == 0) {
                    /* Seen working with cuDNN 9.19; a cuDNN that wants a
                     * driver even for precompiled engines cannot show it. */
                    static char why[640];
                    snprintf(why, sizeof why, "cuDNN %zu needs a driver to finalize plans: %s", cudnnGetVersion(),
                             fm_last_error());
                    cudnnBackendDestroyDescriptor(target);
                    FM_TEST_SKIP(why);
                }
                if (rc) {
                    FM_TEST_FAIL_AT("%s: %s", what, fm_last_error());
                    continue;
                }
                planned++;
                printf("    %-70s %s, workspace %lld B, %d tried%s\n", what, p.engine_desc, (long long)p.workspace,
                       p.tried, p.relaxed ? " (relaxed)" : "");
                FM_CHECK(p.plan != NULL && p.cfg != NULL && p.workspace >= 0);
                if (k_dtypes[d] == FM_CUDA_F32) {
                    FM_CHECK(!p.relaxed);
                    FM_CHECK((p.numerical_notes & exact) == 0);
                }
                /* Variant packs check pointers before cuDNN sees them. */
                cudnnBackendDescriptor_t vp = NULL;
                char *fake = (char *)(uintptr_t)0x10000; /* never dereferenced: the pack only records it */
                void *ws = p.workspace ? fake : NULL;
                FM_CHECK_OK(fm_cudnn_varpack_create(&p, fake, fake + 256, fake + 512, fake + 768, ws, &vp));
                fm_cudnn_varpack_destroy(vp);
                FM_CHECK_ERR(fm_cudnn_varpack_create(&p, fake + 4, fake + 256, fake + 512, fake + 768, ws, &vp),
                             FM_EINVAL);
                FM_CHECK_ERR(fm_cudnn_varpack_create(&p, NULL, fake + 256, fake + 512, fake + 768, ws, &vp), FM_EINVAL);
                fm_cudnn_plan_destroy(&p);
            }
    }
    FM_CHECK_EQ(planned, 12);
    cudnnBackendDestroyDescriptor(target);
}

/* Bad shapes are refused before cuDNN sees them, naming the layer. */
static void test_bad_layers_refused(void) {
    fm_cudnn_layer_t s = {.name = "bad", .op = FM_CUDNN_MATMUL, .dtype = CUDNN_DATA_FLOAT, .m = 0, .k = 4, .n = 4};
    fm_cudnn_plan_t p;
    FM_CHECK_ERR(fm_cudnn_plan_build(NULL, NULL, &s, 0, &p), FM_EINVAL);
    FM_CHECK_CONTAINS(fm_last_error(), "bad");
    s.m = 4;
    s.dtype = CUDNN_DATA_INT8;
    FM_CHECK_ERR(fm_cudnn_plan_build(NULL, NULL, &s, 0, &p), FM_EINVAL);
    fm_cudnn_layer_t c = {.name = "conv", .op = FM_CUDNN_CONV, .dtype = CUDNN_DATA_FLOAT, .batch = 1, .c = 1, .h = 2,
                          .w = 2, .kout = 4, .r = 5, .s = 5, .pad = 0};
    FM_CHECK_ERR(fm_cudnn_plan_build(NULL, NULL, &c, 0, &p), FM_EINVAL); /* empty output */
    FM_CHECK_EQ(fm_cudnn_conv_out(28, 3, 1), 28);
    FM_CHECK_EQ(fm_cudnn_conv_out(14, 3, 0), 12);
}

/* On a GPU: every layer of both nets plans on the real device, for every
 * precision's storage type, at the smallest and a large batch. */
static void test_plans_on_device(void) {
    const char *skip = fm_gpu_skip_reason();
    if (skip)
        FM_TEST_SKIP(skip);
    cudnnHandle_t h;
    FM_REQUIRE(cudnnCreate(&h) == CUDNN_STATUS_SUCCESS);
    for (int a = 0; a < 2; a++)
        for (int d = 0; d < 3; d++) {
            fm_cuda_net_t net;
            FM_REQUIRE_OK(fm_cuda_net_init(&net, a == 0 ? FM_ARCH_MLP : FM_ARCH_CNN, k_dtypes[d],
                                           a == 0 ? 1 : k_dtypes[d] == FM_CUDA_F32 ? 1 : 8));
            for (int l = 0; l < net.nlayers; l++)
                for (int bi = 0; bi < 4; bi += 2) {
                    fm_cudnn_layer_t s = fm_cuda_net_layer_shape(&net, l, k_batches[bi]);
                    char what[192];
                    fm_cudnn_layer_describe(&s, what, sizeof what);
                    fm_cudnn_plan_t p;
                    int rc = fm_cudnn_plan_build(h, NULL, &s, 0, &p);
                    if (rc) {
                        FM_TEST_FAIL_AT("%s: %s", what, fm_last_error());
                        continue;
                    }
                    printf("    %-70s %s, workspace %lld B\n", what, p.engine_desc, (long long)p.workspace);
                    fm_cudnn_plan_destroy(&p);
                }
        }
    cudnnDestroy(h);
}

FM_TEST_MAIN({"bad_layers_refused", test_bad_layers_refused},
             {"graphs_rank_engines_for_h200", test_graphs_rank_engines_for_h200},
             {"conv_plans_finalize_for_h200", test_conv_plans_finalize_for_h200},
             {"plans_on_device", test_plans_on_device})
