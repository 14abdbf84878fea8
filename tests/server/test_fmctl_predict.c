/* test_fmctl_predict.c: `fmctl predict` against a real fmserve: labels from
 * IDX files, labelled sets and PNG files equal the offline engine's, and the
 * streaming mode accounts for every image per version. */
#include <png.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fm_model.h"
#include "fm_srv_harness.h"
#include "fm_test.h"

static fm_srv_t srv;
static int started;
static fm_dataset_t ds;
static int32_t *want[2];

static int setup(void) {
    if (started)
        return started > 0;
    started = -1;
    if (fm_srv_fixture(&ds) != 0)
        return 0;
    char *v1 = fm_test_path(fm_srv_models_dir(), "v1"), *v2 = fm_test_path(fm_srv_models_dir(), "v2");
    want[0] = malloc(ds.n * sizeof(int32_t));
    want[1] = malloc(ds.n * sizeof(int32_t));
    int ok = fm_srv_offline(v1, ds.images, ds.n, want[0], NULL) == 0 &&
             fm_srv_offline(v2, ds.images, ds.n, want[1], NULL) == 0;
    const char *args[] = {"--stable-model", v1, "--canary-model", v2, NULL};
    const char *env[] = {"AB_TEST_RATIO=0.5", NULL};
    if (ok && fm_srv_start(&srv, args, env) == 0)
        started = 1;
    free(v1);
    free(v2);
    return started > 0;
}

/* Runs fmctl with `args` (NULL-terminated) and returns its exit code and
 * stdout (malloc'd). */
static int fmctl(const char *const *args, char **out) {
    char path[512];
    snprintf(path, sizeof path, "%s/fmctl-%d.out", fm_test_tmpdir(), (int)getpid());
    fflush(NULL); /* a child must not inherit and re-print buffered output */
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen(path, "w", stdout))
            _exit(126);
        const char *argv[40] = {FMCTL_BIN};
        int a = 1;
        for (int i = 0; args[i] && a < 39; i++)
            argv[a++] = args[i];
        argv[a] = NULL;
        unsetenv("FM_AUTH_TOKEN");
        execv(FMCTL_BIN, (char *const *)argv);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    FILE *f = fopen(path, "r");
    size_t cap = 1 << 20;
    *out = calloc(1, cap);
    if (f) {
        size_t n = fread(*out, 1, cap - 1, f);
        (*out)[n] = '\0';
        fclose(f);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Reads "NAME LABEL CLASS CONFIDENCE  ROLE VERSION ..." lines (a class name
 * may contain a space, so the role is found by its surrounding spaces). */
static int parse_labels(const char *out, int32_t *labels, char roles[][8], size_t cap) {
    size_t n = 0;
    for (const char *line = out; *line && n < cap;) {
        char name[64];
        int label;
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        char buf[2048];
        snprintf(buf, sizeof buf, "%.*s", (int)(len < sizeof buf ? len : sizeof buf - 1), line);
        if (sscanf(buf, "%63s %d", name, &label) == 2 && strcmp(name, "accuracy") != 0) {
            labels[n] = label;
            if (roles)
                snprintf(roles[n], 8, "%s", strstr(buf, "  canary ") ? "canary" : strstr(buf, "  stable ") ? "stable" : "?");
            n++;
        }
        line = nl ? nl + 1 : line + len;
    }
    return (int)n;
}

static char server_arg[64];

static void test_labelled_set_pinned(void) {
    FM_REQUIRE(setup());
    snprintf(server_arg, sizeof server_arg, "127.0.0.1:%d", srv.rpc_port);
    char *fix = fm_test_path(fm_test_fixtures_dir(), "fashion-mnist");
    const char *args[] = {"predict", "--server", server_arg, "--data", fix, "--limit", "100", "--version", "v2",
                          "--batch", "30", NULL};
    char *out;
    FM_CHECK_EQ(fmctl(args, &out), 0);
    int32_t got[100];
    char roles[100][8];
    FM_CHECK_EQ(parse_labels(out, got, roles, 100), 100);
    int wrong = 0, correct = 0;
    for (int i = 0; i < 100; i++) {
        wrong += got[i] != want[1][i];
        correct += want[1][i] == ds.labels[i];
        FM_CHECK_STR(roles[i], "canary");
    }
    FM_CHECK_EQ(wrong, 0);
    char acc[64];
    snprintf(acc, sizeof acc, "accuracy %.4f (%d of 100)", correct / 100.0, correct);
    FM_CHECK_CONTAINS(out, acc);
    free(out);
    free(fix);
}

static void test_idx_file_with_probs(void) {
    FM_REQUIRE(setup());
    char *file = fm_test_path(fm_test_fixtures_dir(), "fashion-mnist/t10k-images-idx3-ubyte.gz");
    const char *args[] = {"predict", "--server", server_arg, "--images", file, "--limit", "7", "--probs",
                          "--version", "stable", NULL};
    char *out;
    FM_CHECK_EQ(fmctl(args, &out), 0);
    int32_t got[7];
    FM_CHECK_EQ(parse_labels(out, got, NULL, 7), 7);
    for (int i = 0; i < 7; i++)
        FM_CHECK_EQ(got[i], want[0][i]);
    FM_CHECK_CONTAINS(out, "probs ");
    FM_CHECK(strstr(out, "true ") == NULL); /* no labels in a bare images file */
    free(out);
    free(file);
}

static void test_png_files(void) {
    FM_REQUIRE(setup());
    char *paths[3];
    for (int i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof name, "img%d.png", i);
        paths[i] = fm_test_path(fm_test_tmpdir(), name);
        png_image img;
        memset(&img, 0, sizeof img);
        img.version = PNG_IMAGE_VERSION;
        img.width = img.height = 28;
        img.format = i == 2 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY; /* colour is converted to grey */
        uint8_t rgb[784 * 3];
        const uint8_t *px = ds.images + (size_t)i * 784;
        for (int k = 0; k < 784; k++)
            rgb[3 * k] = rgb[3 * k + 1] = rgb[3 * k + 2] = px[k];
        FM_REQUIRE(png_image_write_to_file(&img, paths[i], 0, i == 2 ? rgb : px, 0, NULL));
    }
    const char *args[] = {"predict", "--server", server_arg, "--version", "v1", paths[0], paths[1], paths[2], NULL};
    char *out;
    FM_CHECK_EQ(fmctl(args, &out), 0);
    int32_t got[3];
    FM_CHECK_EQ(parse_labels(out, got, NULL, 3), 3);
    for (int i = 0; i < 3; i++)
        FM_CHECK_EQ(got[i], want[0][i]);
    FM_CHECK_CONTAINS(out, "img0.png");
    free(out);
    /* A PNG of the wrong size is refused by name. */
    char *big = fm_test_path(fm_test_tmpdir(), "big.png");
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = img.height = 32;
    img.format = PNG_FORMAT_GRAY;
    static uint8_t px[32 * 32];
    FM_REQUIRE(png_image_write_to_file(&img, big, 0, px, 0, NULL));
    const char *bad[] = {"predict", "--server", server_arg, big, NULL};
    FM_CHECK_EQ(fmctl(bad, &out), 1);
    free(out);
    free(big);
    for (int i = 0; i < 3; i++)
        free(paths[i]);
}

static void test_stream(void) {
    FM_REQUIRE(setup());
    char *fix = fm_test_path(fm_test_fixtures_dir(), "fashion-mnist");
    const char *args[] = {"predict", "--server", server_arg, "--data", fix, "--stream", "--connections", "4",
                          "--batch", "16", NULL};
    char *out;
    FM_CHECK_EQ(fmctl(args, &out), 0);
    printf("%s", out);
    FM_CHECK_CONTAINS(out, "total          1000 images");
    FM_CHECK_CONTAINS(out, "v1         stable");
    FM_CHECK_CONTAINS(out, "v2         canary");
    FM_CHECK_CONTAINS(out, "images/s over 4 connections");
    free(out);
    /* Pinned: every image on one version, with exactly its offline accuracy. */
    const char *pinned[] = {"predict", "--server", server_arg, "--data", fix, "--stream", "--version", "v2",
                            "--batch", "7", "--depth", "3", NULL};
    FM_CHECK_EQ(fmctl(pinned, &out), 0);
    int correct = 0;
    for (size_t i = 0; i < ds.n; i++)
        correct += want[1][i] == ds.labels[i];
    char line[128];
    snprintf(line, sizeof line, "v2         canary      1000 %9.4f", correct / 1000.0);
    FM_CHECK_CONTAINS(out, line);
    free(out);
    free(fix);
}

static void test_unreachable_server(void) {
    char *fix = fm_test_path(fm_test_fixtures_dir(), "fashion-mnist");
    const char *args[] = {"predict", "--server", "127.0.0.1:1", "--data", fix, "--limit", "3", NULL};
    char *out;
    FM_CHECK_EQ(fmctl(args, &out), 1);
    free(out);
    const char *bad[] = {"predict", "--server", "127.0.0.1:99999", "--data", fix, NULL};
    FM_CHECK_EQ(fmctl(bad, &out), 1);
    free(out);
    free(fix);
}

static void test_shutdown(void) {
    if (started <= 0)
        FM_TEST_SKIP("server not started");
    FM_CHECK_EQ(fm_srv_stop(&srv, SIGTERM, 30000), 0);
    free(want[0]);
    free(want[1]);
    fm_dataset_free(&ds);
}

FM_TEST_MAIN({"labelled_set_pinned", test_labelled_set_pinned}, {"idx_file_with_probs", test_idx_file_with_probs},
             {"png_files", test_png_files}, {"stream", test_stream}, {"unreachable_server", test_unreachable_server},
             {"shutdown", test_shutdown})
