/* test_idx.c: the IDX loader on the real fixture and on bad files, which must
 * be refused with an error naming the file and the problem. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "fm_dims.h"
#include "fm_fetch.h"
#include "fm_idx.h"
#include "fm_test.h"

static char *fixture(const char *name) {
    char *dir = fm_test_path(fm_test_fixtures_dir(), "fashion-mnist");
    char *p = fm_test_path(dir, name);
    free(dir);
    return p;
}

/* Writes raw bytes to a file in the scratch directory and returns its path. */
static char *write_bytes(const char *name, const void *data, size_t len, int gzip) {
    char *p = fm_test_path(fm_test_tmpdir(), name);
    if (gzip) {
        gzFile f = gzopen(p, "wb");
        if (len)
            gzwrite(f, data, (unsigned)len);
        gzclose(f);
    } else {
        FILE *f = fopen(p, "wb");
        fwrite(data, 1, len, f);
        fclose(f);
    }
    return p;
}

static size_t idx_header(uint8_t *buf, uint8_t type, int ndim, const uint32_t *dims) {
    buf[0] = 0;
    buf[1] = 0;
    buf[2] = type;
    buf[3] = (uint8_t)ndim;
    for (int d = 0; d < ndim; d++) {
        buf[4 + 4 * d] = (uint8_t)(dims[d] >> 24);
        buf[5 + 4 * d] = (uint8_t)(dims[d] >> 16);
        buf[6 + 4 * d] = (uint8_t)(dims[d] >> 8);
        buf[7 + 4 * d] = (uint8_t)dims[d];
    }
    return 4 + 4 * (size_t)ndim;
}

/* Expects fm_idx_load(path) to fail with `code` and a detail naming the file. */
/* Takes the path (from write_bytes) and frees it. */
static void expect_refused(char *path, int code, const char *words) {
    fm_idx_t idx;
    FM_CHECK_ERR(fm_idx_load(path, 0, &idx), code);
    FM_CHECK_CONTAINS(fm_last_error(), path);
    FM_CHECK_CONTAINS(fm_last_error(), words);
    FM_CHECK(idx.data == NULL);
    free(path);
}

static void test_fixture_loads(void) {
    fm_dataset_t ds;
    char *dir = fm_test_path(fm_test_fixtures_dir(), "fashion-mnist");
    FM_REQUIRE_OK(fm_dataset_load(dir, "t10k", &ds));
    FM_CHECK_EQ(ds.n, 1000);
    /* The official test set starts with an ankle boot, a pullover and two trousers. */
    FM_CHECK_EQ(ds.labels[0], 9);
    FM_CHECK_EQ(ds.labels[1], 2);
    FM_CHECK_EQ(ds.labels[2], 1);
    FM_CHECK_EQ(ds.labels[3], 1);
    long sum = 0;
    for (size_t i = 0; i < ds.n * FM_IMAGE_PIXELS; i++)
        sum += ds.images[i];
    double mean = (double)sum / (double)(ds.n * FM_IMAGE_PIXELS);
    FM_CHECK(mean > 60 && mean < 90); /* Fashion-MNIST pixel mean is ~73 */
    FM_CHECK_EQ(strlen(ds.sha256), 64);
    fm_dataset_t again;
    FM_REQUIRE_OK(fm_dataset_load(dir, "t10k", &again));
    FM_CHECK_STR(ds.sha256, again.sha256);
    fm_dataset_t train;
    FM_REQUIRE_OK(fm_dataset_load(dir, "train", &train));
    FM_CHECK_EQ(train.n, 2000);
    FM_CHECK(strcmp(train.sha256, ds.sha256) != 0);
    fm_dataset_free(&train);
    fm_dataset_free(&again);
    fm_dataset_free(&ds);
    free(dir);
}

static void test_raw_and_gzip_agree(void) {
    char *gz = fixture("t10k-images-idx3-ubyte.gz");
    fm_idx_t a, b;
    FM_REQUIRE_OK(fm_idx_load(gz, 3, &a));
    char *raw = fm_test_path(fm_test_tmpdir(), "raw-images-idx3-ubyte");
    FM_REQUIRE_OK(fm_idx_save(raw, &a, 0));
    FM_REQUIRE_OK(fm_idx_load(raw, 3, &b));
    FM_CHECK_EQ(a.count, b.count);
    FM_CHECK_EQ(a.item_bytes, 784);
    FM_CHECK(memcmp(a.data, b.data, a.count * a.item_bytes) == 0);
    /* The digest is of the decompressed content, so both files agree. */
    FM_CHECK_STR(a.sha256, b.sha256);
    fm_idx_free(&a);
    fm_idx_free(&b);
    free(gz);
    free(raw);
}

static void test_bad_headers(void) {
    uint8_t buf[64];
    uint32_t dims[3] = {2, 28, 28};
    expect_refused(write_bytes("empty", "", 0, 0), FM_ETRUNCATED, "magic");
    expect_refused(write_bytes("empty.gz", "", 0, 1), FM_ETRUNCATED, "magic");
    memcpy(buf, "\x12\x34\x08\x03", 4);
    expect_refused(write_bytes("badmagic", buf, 16, 0), FM_EFORMAT, "bad magic");
    size_t n = idx_header(buf, 0x0D, 3, dims);
    expect_refused(write_bytes("float", buf, n, 0), FM_EUNSUPPORTED, "0x0d");
    n = idx_header(buf, 0x08, 3, dims);
    buf[3] = 0;
    expect_refused(write_bytes("rank0", buf, n, 0), FM_EFORMAT, "rank 0");
    buf[3] = 9;
    expect_refused(write_bytes("rank9", buf, n, 0), FM_EFORMAT, "rank 9");
    uint32_t zero[3] = {2, 0, 28};
    n = idx_header(buf, 0x08, 3, zero);
    expect_refused(write_bytes("zerodim", buf, n, 0), FM_EFORMAT, "dimension 1 is zero");
    n = idx_header(buf, 0x08, 3, dims);
    expect_refused(write_bytes("shorthdr", buf, 9, 0), FM_ETRUNCATED, "header");
    /* A header that declares far more than the limit is refused before any allocation. */
    uint32_t huge[3] = {4000000000u, 28, 28};
    n = idx_header(buf, 0x08, 3, huge);
    expect_refused(write_bytes("huge", buf, n, 0), FM_EFORMAT, "limit");
    /* A rank the caller did not ask for. */
    fm_idx_t idx;
    n = idx_header(buf, 0x08, 3, dims);
    char *p = write_bytes("rank3", buf, n, 0);
    FM_CHECK_ERR(fm_idx_load(p, 1, &idx), FM_ESHAPE);
    FM_CHECK_CONTAINS(fm_last_error(), "expected 1");
    free(p);
}

static void test_truncated_and_trailing(void) {
    uint32_t dims[3] = {3, 28, 28};
    size_t full = 16 + 3 * 784;
    uint8_t *buf = calloc(1, full + 10);
    idx_header(buf, 0x08, 3, dims);
    for (size_t i = 16; i < full; i++)
        buf[i] = (uint8_t)i;
    expect_refused(write_bytes("trunc-raw", buf, full - 100, 0), FM_ETRUNCATED, "truncated");
    expect_refused(write_bytes("trunc.gz", buf, full - 100, 1), FM_ETRUNCATED, "truncated");
    expect_refused(write_bytes("trailing", buf, full + 10, 0), FM_EFORMAT, "trailing");
    /* A gzip stream cut in the middle. */
    char *whole = write_bytes("whole.gz", buf, full, 1);
    FILE *f = fopen(whole, "rb");
    uint8_t gz[8192];
    size_t gzlen = fread(gz, 1, sizeof gz, f);
    fclose(f);
    expect_refused(write_bytes("cut.gz", gz, gzlen / 2, 0), FM_ETRUNCATED, "truncated");
    /* Corrupt compressed bytes (the CRC or inflate must catch it). */
    gz[gzlen / 2] ^= 0xFF;
    gz[gzlen / 2 + 1] ^= 0xFF;
    char *bad = write_bytes("corrupt.gz", gz, gzlen, 0);
    fm_idx_t idx;
    int rc = fm_idx_load(bad, 0, &idx);
    FM_CHECK(rc == FM_EFORMAT || rc == FM_ETRUNCATED);
    FM_CHECK_CONTAINS(fm_last_error(), bad);
    free(bad);
    free(whole);
    free(buf);
}

static void test_dataset_checks(void) {
    char *dir = fm_test_path(fm_test_tmpdir(), "ds");
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", dir);
    FM_REQUIRE(system(cmd) == 0);
    /* 2 images but 3 labels. */
    fm_idx_t img = {.ndim = 3, .dims = {2, 28, 28}, .count = 2, .item_bytes = 784};
    img.data = calloc(2, 784);
    uint8_t labs[3] = {1, 2, 3};
    fm_idx_t lab = {.ndim = 1, .dims = {3}, .count = 3, .item_bytes = 1, .data = labs};
    char *ip = fm_test_path(dir, "t10k-images-idx3-ubyte.gz");
    char *lp = fm_test_path(dir, "t10k-labels-idx1-ubyte.gz");
    FM_REQUIRE_OK(fm_idx_save(ip, &img, 1));
    FM_REQUIRE_OK(fm_idx_save(lp, &lab, 1));
    fm_dataset_t ds;
    FM_CHECK_ERR(fm_dataset_load(dir, "t10k", &ds), FM_ESHAPE);
    FM_CHECK_CONTAINS(fm_last_error(), "3 labels");
    /* A label that is not a class. */
    lab.dims[0] = lab.count = 2;
    labs[1] = 12;
    FM_REQUIRE_OK(fm_idx_save(lp, &lab, 1));
    FM_CHECK_ERR(fm_dataset_load(dir, "t10k", &ds), FM_EFORMAT);
    FM_CHECK_CONTAINS(fm_last_error(), "label 12");
    /* Images that are not 28x28. */
    fm_idx_t odd = {.ndim = 3, .dims = {2, 28, 27}, .count = 2, .item_bytes = 756, .data = img.data};
    FM_REQUIRE_OK(fm_idx_save(ip, &odd, 1));
    FM_CHECK_ERR(fm_dataset_load(dir, "t10k", &ds), FM_ESHAPE);
    FM_CHECK_CONTAINS(fm_last_error(), "28 x 27");
    /* Missing files and unknown splits. */
    FM_CHECK_ERR(fm_dataset_load(dir, "train", &ds), FM_ENOTFOUND);
    FM_CHECK_CONTAINS(fm_last_error(), "train-images-idx3-ubyte");
    FM_CHECK_ERR(fm_dataset_load(dir, "validation", &ds), FM_EINVAL);
    free(img.data);
    free(ip);
    free(lp);
    free(dir);
}

static void test_data_dir_resolution(void) {
    const char *was = getenv("FM_DATA");
    char *saved = was ? strdup(was) : NULL;
    setenv("FM_DATA", "/from/env", 1);
    FM_CHECK_STR(fm_data_dir("/from/flag"), "/from/flag");
    FM_CHECK_STR(fm_data_dir(NULL), "/from/env");
    unsetenv("FM_DATA");
    FM_CHECK(fm_data_dir(NULL) == NULL);
    FM_CHECK_CONTAINS(fm_last_error(), "FM_DATA");
    if (saved)
        setenv("FM_DATA", saved, 1);
    free(saved);
}

/* With FM_DATA pointing at the full set: counts and the official checksums. */
static void test_full_dataset(void) {
    const char *dir = fm_test_full_data_dir();
    if (!dir)
        FM_TEST_SKIP("FM_DATA is not set to the full Fashion-MNIST");
    FM_CHECK_OK(fm_fetch_verify(dir));
    fm_dataset_t train, test;
    FM_REQUIRE_OK(fm_dataset_load(dir, "train", &train));
    FM_REQUIRE_OK(fm_dataset_load(dir, "t10k", &test));
    FM_CHECK_EQ(train.n, 60000);
    FM_CHECK_EQ(test.n, 10000);
    long per_class[10] = {0};
    for (size_t i = 0; i < train.n; i++)
        per_class[train.labels[i]]++;
    for (int k = 0; k < 10; k++)
        FM_CHECK_EQ(per_class[k], 6000);
    fm_dataset_free(&train);
    fm_dataset_free(&test);
}

/* A copy of a real file with one byte changed fails verification, naming it. */
static void test_fetch_verify_detects_corruption(void) {
    const char *src = fm_test_full_data_dir();
    if (!src)
        FM_TEST_SKIP("FM_DATA is not set to the full Fashion-MNIST");
    char *dir = fm_test_path(fm_test_tmpdir(), "fetched");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "mkdir -p %s && cp %s/*-ubyte.gz %s/", dir, src, dir);
    FM_REQUIRE(system(cmd) == 0);
    FM_CHECK_OK(fm_fetch_verify(dir));
    char *lp = fm_test_path(dir, "t10k-labels-idx1-ubyte.gz");
    fm_idx_t lab;
    FM_REQUIRE_OK(fm_idx_load(lp, 1, &lab));
    lab.data[17] = (uint8_t)((lab.data[17] + 1) % 10);
    FM_REQUIRE_OK(fm_idx_save(lp, &lab, 1));
    FM_CHECK_ERR(fm_fetch_verify(dir), FM_ECHECKSUM);
    FM_CHECK_CONTAINS(fm_last_error(), "t10k-labels-idx1-ubyte.gz");
    fm_idx_free(&lab);
    free(lp);
    free(dir);
}

FM_TEST_MAIN({"fixture_loads", test_fixture_loads}, {"raw_and_gzip_agree", test_raw_and_gzip_agree},
             {"bad_headers", test_bad_headers}, {"truncated_and_trailing", test_truncated_and_trailing},
             {"dataset_checks", test_dataset_checks}, {"data_dir_resolution", test_data_dir_resolution},
             {"full_dataset", test_full_dataset},
             {"fetch_verify_detects_corruption", test_fetch_verify_detects_corruption})
