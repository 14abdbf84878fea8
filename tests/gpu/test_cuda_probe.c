/* test_cuda_probe.c: the CUDA backend's probe, "auto" selection and config
 * checks. Runs everywhere: without a GPU it checks that the probe says why
 * (the driver's own words) and that "auto" falls back to the CPU engine;
 * with one, that the backend opens and describes itself. */
#include <stdio.h>
#include <string.h>

#include "fm_backend.h"
#include "fm_gpu_test.h"
#include "fm_test.h"

static void test_probe_says_why(void) {
    int rc = fm_backend_cuda_ops.probe();
    if (rc == 0) {
        printf("    probe: a usable GPU is present\n");
        return;
    }
    FM_CHECK_EQ(rc, FM_ENODEVICE);
    printf("    probe: %s\n", fm_last_error());
    FM_CHECK_CONTAINS(fm_last_error(), "CUDA");
}

static void test_auto_selects(void) {
    const fm_backend_ops_t *ops = NULL;
    FM_REQUIRE_OK(fm_backend_select("auto", &ops));
    int gpu = fm_backend_cuda_ops.probe() == 0;
    FM_CHECK(ops == (gpu ? &fm_backend_cuda_ops : &fm_backend_cpu_ops));
    FM_CHECK(fm_backend_lookup("cuda") == &fm_backend_cuda_ops);
}

static void test_explicit_cuda(void) {
    fm_engine_t e;
    fm_backend_config_t cfg = fm_gpu_config(FM_PRECISION_FP32, 64, 2, 1);
    int rc = fm_engine_open("cuda", &cfg, &e);
    if (fm_backend_cuda_ops.probe() != 0) {
        FM_CHECK_EQ(rc, FM_ENODEVICE);
        return;
    }
    FM_REQUIRE_OK(rc);
    char desc[512];
    fm_engine_describe(&e, desc, sizeof desc);
    printf("    %s\n", desc);
    FM_CHECK_CONTAINS(desc, "cuDNN");
    FM_CHECK_CONTAINS(desc, "2 streams");
    FM_CHECK(fm_engine_is_async(&e));
    void *p = fm_engine_host_alloc(&e, 1 << 20);
    FM_CHECK(p != NULL);
    fm_engine_host_free(&e, p);
    fm_engine_close(&e);
}

/* Bad configurations are refused before any device work, GPU or not. */
static void test_bad_config(void) {
    fm_backend_t *b = NULL;
    fm_backend_config_t cfg = fm_gpu_config(FM_PRECISION_FP32, 256, 9, 1);
    FM_CHECK_ERR(fm_backend_cuda_ops.create(&cfg, &b), FM_EINVAL);
    FM_CHECK_CONTAINS(fm_last_error(), "streams");
    cfg = fm_gpu_config(FM_PRECISION_FP32, 0, 2, 1);
    FM_CHECK_ERR(fm_backend_cuda_ops.create(&cfg, &b), FM_EINVAL);
    FM_CHECK_CONTAINS(fm_last_error(), "max_batch");
    cfg = fm_gpu_config(FM_PRECISION_FP32, 1 << 20, 2, 1);
    FM_CHECK_ERR(fm_backend_cuda_ops.create(&cfg, &b), FM_EINVAL);
    cfg = fm_gpu_config((fm_precision_t)7, 256, 2, 1);
    FM_CHECK_ERR(fm_backend_cuda_ops.create(&cfg, &b), FM_EINVAL);
    FM_CHECK(b == NULL);
}

FM_TEST_MAIN({"probe_says_why", test_probe_says_why}, {"auto_selects", test_auto_selects},
             {"explicit_cuda", test_explicit_cuda}, {"bad_config", test_bad_config})
