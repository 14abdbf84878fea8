/* test_model.c: the model format: a save/load round trip, metadata, and every
 * kind of bad model directory refused with the file and the problem named. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fm_hash.h"
#include "fm_model.h"
#include "fm_ref_forward.h"
#include "fm_safetensors.h"
#include "fm_test.h"

static int counter;

/* A fresh directory holding a valid saved model of `arch`. */
static char *saved_model(fm_arch_t arch, fm_model_t **keep) {
    char name[32];
    snprintf(name, sizeof name, "model%d", counter++);
    char *dir = fm_test_path(fm_test_tmpdir(), name);
    fm_model_t *m = fm_model_new(arch);
    fm_ref_random_init(m, 42 + (uint64_t)counter, 1.0);
    fm_model_set_identity(m, "test-model", "v7");
    if (fm_model_save(m, dir) != 0) {
        fprintf(stderr, "save failed: %s\n", fm_last_error());
        abort();
    }
    if (keep)
        *keep = m;
    else
        fm_model_free(m);
    return dir;
}

static char *read_all(const char *path, size_t *len) {
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        abort();
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    *len = fread(buf, 1, (size_t)n, f);
    buf[*len] = '\0';
    fclose(f);
    return buf;
}

static void write_all(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, len, f);
    fclose(f);
}

/* Replaces the weights file with `bytes` and updates the sidecar's digest so
 * that the checksum passes and the container check itself is exercised. */
static void replace_weights(const char *dir, const void *bytes, size_t len) {
    char *w = fm_test_path(dir, "model.safetensors"), *s = fm_test_path(dir, "model.json");
    char old[65], new_sha[65];
    fm_sha256_file(w, old);
    write_all(w, bytes, len);
    fm_sha256_hex(bytes, len, new_sha);
    size_t jlen = 0;
    char *json = read_all(s, &jlen);
    char *at = strstr(json, old);
    if (at)
        memcpy(at, new_sha, 64);
    write_all(s, json, jlen);
    free(json);
    free(w);
    free(s);
}

static void expect_load_fails(const char *dir, int code, const char *file, const char *words) {
    fm_model_t *m = NULL;
    FM_CHECK_ERR(fm_model_load(dir, &m), code);
    FM_CHECK(m == NULL);
    FM_CHECK_CONTAINS(fm_last_error(), file);
    FM_CHECK_CONTAINS(fm_last_error(), words);
}

static void test_round_trip(void) {
    for (int a = FM_ARCH_MLP; a <= FM_ARCH_CNN; a++) {
        fm_model_t *orig;
        char *dir = saved_model((fm_arch_t)a, &orig);
        fm_model_t *m;
        FM_REQUIRE_OK(fm_model_load(dir, &m));
        FM_CHECK_EQ(fm_model_arch(m), a);
        FM_CHECK_STR(fm_model_name(m), "test-model");
        FM_CHECK_STR(fm_model_version(m), "v7");
        FM_CHECK_STR(fm_model_weights_sha256(m), fm_model_weights_sha256(orig));
        FM_CHECK_STR(fm_model_dir(m), dir);
        FM_CHECK_EQ(fm_model_numel(m), a == FM_ARCH_MLP ? 235146 : 421642);
        for (int i = 0; i < fm_model_param_count(m); i++) {
            const fm_tensor_t *x = fm_model_param(orig, i), *y = fm_model_param(m, i);
            FM_CHECK_STR(x->name, y->name);
            FM_CHECK(memcmp(x->data, y->data, x->numel * sizeof(float)) == 0);
            FM_CHECK(((uintptr_t)y->data & 63) == 0);
        }
        FM_CHECK(fm_model_meta_get_string(m, NULL, "created_at") != NULL);
        FM_CHECK_STR(fm_model_meta_get_string(m, "architecture", "type"), a == FM_ARCH_MLP ? "mlp" : "cnn");
        fm_model_free(m);
        fm_model_free(orig);
        free(dir);
    }
}

static void test_metadata(void) {
    fm_model_t *m = fm_model_new(FM_ARCH_MLP);
    FM_CHECK_OK(fm_model_meta_set_number(m, "training", "epochs", 12));
    FM_CHECK_OK(fm_model_meta_set_number(m, "training", "epochs", 15)); /* overwrite */
    FM_CHECK_OK(fm_model_meta_set_string(m, "training", "optimizer", "adam"));
    FM_CHECK_OK(fm_model_meta_set_number(m, "metrics", "test_accuracy", 0.8912));
    FM_CHECK_OK(fm_model_meta_set_string(m, NULL, "source_commit", "abc123"));
    FM_CHECK_OK(fm_model_meta_set_string(m, NULL, "version", "v3"));
    FM_CHECK_STR(fm_model_version(m), "v3");
    char *dir = fm_test_path(fm_test_tmpdir(), "meta");
    FM_REQUIRE_OK(fm_model_save(m, dir));
    fm_model_t *l;
    FM_REQUIRE_OK(fm_model_load(dir, &l));
    double v = 0;
    FM_CHECK_OK(fm_model_meta_get_number(l, "training", "epochs", &v));
    FM_CHECK_EQ(v, 15);
    FM_CHECK_OK(fm_model_meta_get_number(l, "metrics", "test_accuracy", &v));
    FM_CHECK_NEAR(v, 0.8912, 1e-12);
    FM_CHECK_STR(fm_model_meta_get_string(l, "training", "optimizer"), "adam");
    FM_CHECK_STR(fm_model_meta_get_string(l, NULL, "source_commit"), "abc123");
    FM_CHECK_ERR(fm_model_meta_get_number(l, "metrics", "missing", &v), FM_ENOTFOUND);
    FM_CHECK(fm_model_meta_get_string(l, "nosection", "x") == NULL);
    char *json = fm_model_meta_json(l);
    FM_CHECK_CONTAINS(json, "\"sha256\"");
    FM_CHECK_CONTAINS(json, "T-shirt/top");
    free(json);
    fm_model_t *c = fm_model_clone(l);
    FM_CHECK_STR(fm_model_version(c), "v3");
    FM_CHECK(fm_model_param(c, 0)->data != fm_model_param(l, 0)->data);
    fm_model_free(c);
    fm_model_free(l);
    fm_model_free(m);
    free(dir);
}

static void test_missing_and_bad_sidecar(void) {
    char *dir = saved_model(FM_ARCH_MLP, NULL);
    char *s = fm_test_path(dir, "model.json"), *w = fm_test_path(dir, "model.safetensors");
    size_t jlen;
    char *json = read_all(s, &jlen);
    /* Missing sidecar, then invalid JSON, then a wrong architecture. */
    unlink(s);
    expect_load_fails(dir, FM_ENOTFOUND, "model.json", "cannot open");
    write_all(s, "{\"format\": ", 11);
    expect_load_fails(dir, FM_EFORMAT, "model.json", "not valid JSON");
    char *wrong = strdup(json);
    char *t = strstr(wrong, "\"mlp\"");
    memcpy(t, "\"rnn\"", 5);
    write_all(s, wrong, jlen);
    expect_load_fails(dir, FM_EFORMAT, "model.json", "architecture.type");
    /* Missing weights. */
    write_all(s, json, jlen);
    unlink(w);
    expect_load_fails(dir, FM_ENOTFOUND, "model.safetensors", "missing");
    free(wrong);
    free(json);
    free(s);
    free(w);
    free(dir);
}

static void test_checksum_mismatch(void) {
    char *dir = saved_model(FM_ARCH_CNN, NULL);
    char *w = fm_test_path(dir, "model.safetensors");
    size_t len;
    char *bytes = read_all(w, &len);
    bytes[len - 5] ^= 0x01; /* one bit of one weight */
    write_all(w, bytes, len);
    expect_load_fails(dir, FM_ECHECKSUM, "model.safetensors", "SHA-256");
    free(bytes);
    free(w);
    free(dir);
}

static void test_bad_containers(void) {
    char *dir = saved_model(FM_ARCH_MLP, NULL);
    char *w = fm_test_path(dir, "model.safetensors");
    size_t len;
    uint8_t *good = (uint8_t *)read_all(w, &len);

    /* Truncated: the last weight bytes are missing. */
    replace_weights(dir, good, len - 100);
    expect_load_fails(dir, FM_ETRUNCATED, "model.safetensors", "outside");
    /* Shorter than the header length field. */
    replace_weights(dir, good, 5);
    expect_load_fails(dir, FM_ETRUNCATED, "model.safetensors", "truncated");
    /* A header length larger than the file. */
    uint8_t *bad = malloc(len);
    memcpy(bad, good, len);
    bad[0] = 0xFF;
    bad[1] = 0xFF;
    bad[2] = 0xFF;
    replace_weights(dir, bad, len);
    expect_load_fails(dir, FM_ETRUNCATED, "model.safetensors", "header length");
    /* Garbage JSON in the header. */
    memcpy(bad, good, len);
    bad[9] = '#';
    replace_weights(dir, bad, len);
    expect_load_fails(dir, FM_EFORMAT, "model.safetensors", "JSON");
    free(bad);

    /* Well-formed containers holding the wrong tensors. */
    fm_model_t *m = fm_model_new(FM_ARCH_MLP);
    fm_ref_random_init(m, 1, 1.0);
    fm_st_entry_t e[FM_MAX_PARAMS + 1];
    int n = fm_model_param_count(m);
    for (int i = 0; i < n; i++) {
        const fm_tensor_t *t = fm_model_param(m, i);
        e[i] = (fm_st_entry_t){t->name, t->ndim, t->shape, t->data};
    }
    uint8_t *buf;
    size_t blen;
    /* Missing fc3.bias. */
    FM_REQUIRE_OK(fm_st_serialize(e, n - 1, NULL, &buf, &blen));
    replace_weights(dir, buf, blen);
    free(buf);
    expect_load_fails(dir, FM_ESHAPE, "model.safetensors", "missing tensor 'fc3.bias'");
    /* fc1.weight transposed. */
    int64_t tshape[2] = {784, 256};
    fm_st_entry_t saved = e[0];
    e[0].shape = tshape;
    FM_REQUIRE_OK(fm_st_serialize(e, n, NULL, &buf, &blen));
    replace_weights(dir, buf, blen);
    free(buf);
    expect_load_fails(dir, FM_ESHAPE, "model.safetensors", "shape [784, 256], expected [256, 784]");
    e[0] = saved;
    /* An extra tensor. */
    int64_t one = 1;
    e[n] = (fm_st_entry_t){"extra", 1, &one, fm_model_param(m, 0)->data};
    FM_REQUIRE_OK(fm_st_serialize(e, n + 1, NULL, &buf, &blen));
    replace_weights(dir, buf, blen);
    free(buf);
    expect_load_fails(dir, FM_ESHAPE, "model.safetensors", "unexpected tensor 'extra'");
    /* A NaN weight. */
    fm_model_param_mut(m, FM_MLP_FC2_B)->data[3] = NAN;
    FM_REQUIRE_OK(fm_st_serialize(e, n, NULL, &buf, &blen));
    replace_weights(dir, buf, blen);
    free(buf);
    expect_load_fails(dir, FM_EFORMAT, "model.safetensors", "non-finite");
    fm_model_free(m);

    /* A dtype other than F32: rewrite "F32" of the first tensor as "F16"
     * (the byte range then no longer matches, which is caught first, or the
     * dtype is). */
    memcpy(good + 8, good + 8, 0);
    char *hdr = (char *)good + 8;
    char *f32 = strstr(hdr, "\"F32\"");
    FM_REQUIRE(f32 != NULL);
    memcpy(f32, "\"F16\"", 5);
    replace_weights(dir, good, len);
    fm_model_t *x = NULL;
    int rc = fm_model_load(dir, &x);
    FM_CHECK(rc == FM_ESHAPE || rc == FM_EFORMAT);
    FM_CHECK_CONTAINS(fm_last_error(), "model.safetensors");
    free(good);
    free(w);
    free(dir);
}

/* Tensors that overlap or leave holes in the data buffer are refused. */
static void test_overlapping_offsets(void) {
    const char *hdr = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}";
    size_t hlen = strlen(hdr);
    uint8_t buf[256] = {0};
    buf[0] = (uint8_t)hlen;
    memcpy(buf + 8, hdr, hlen);
    char *p = fm_test_path(fm_test_tmpdir(), "overlap.safetensors");
    write_all(p, buf, 8 + hlen + 12);
    fm_st_file_t f;
    FM_CHECK_ERR(fm_st_read(p, &f), FM_EFORMAT);
    FM_CHECK_CONTAINS(fm_last_error(), "overlap or hole");
    free(p);
}

static void test_arch_table(void) {
    FM_CHECK_NEAR(fm_arch_flops(FM_ARCH_MLP), 469504, 0);
    FM_CHECK_NEAR(fm_arch_flops(FM_ARCH_CNN), 8482304, 0);
    fm_arch_t a;
    FM_CHECK_OK(fm_arch_parse("cnn", &a));
    FM_CHECK_EQ(a, FM_ARCH_CNN);
    FM_CHECK_ERR(fm_arch_parse("resnet", &a), FM_EINVAL);
    FM_CHECK_STR(fm_class_names[9], "Ankle boot");
}

FM_TEST_MAIN({"round_trip", test_round_trip}, {"metadata", test_metadata},
             {"missing_and_bad_sidecar", test_missing_and_bad_sidecar}, {"checksum_mismatch", test_checksum_mismatch},
             {"bad_containers", test_bad_containers}, {"overlapping_offsets", test_overlapping_offsets},
             {"arch_table", test_arch_table})
