/* test_gpu_not_built.c: stands in for the GPU tests in a build without the
 * CUDA backend (no nvcc or cuDNN at configure time), so the test report says
 * why they did not run instead of listing nothing. */
#include <stdio.h>

#include "fm_test.h"

int main(void) {
    printf("skipped: built without CUDA (nvcc and cuDNN were not found at configure time, or FM_CUDA=OFF)\n");
    return FM_TEST_SKIP_CODE;
}
