/* test_fmctl_train.c: `fmctl train` as a real process: usage errors exit 2
 * and name the flag, SIGINT/SIGTERM during training exit 130 and leave no
 * model behind, and a short run on the fixtures writes a model that loads,
 * with the training parameters, metrics, data digest and commit recorded. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fm_idx.h"
#include "fm_model.h"
#include "fm_test.h"
#include "fm_time.h"

#ifndef FM_FMCTL
#error "FM_FMCTL (path of the fmctl binary) must be defined by the build"
#endif

static char fixture_dir[1024];

static const char *fixtures(void) {
    snprintf(fixture_dir, sizeof fixture_dir, "%s/fashion-mnist", fm_test_fixtures_dir());
    return fixture_dir;
}

/* Reads all of fd into a malloc'd string. */
static char *slurp(int fd) {
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    ssize_t n;
    while (buf && (n = read(fd, buf + len, cap - len - 1)) > 0) {
        len += (size_t)n;
        if (cap - len < 2) {
            char *bigger = realloc(buf, cap *= 2);
            if (!bigger) {
                free(buf);
                return NULL;
            }
            buf = bigger;
        }
    }
    if (buf)
        buf[len] = 0;
    return buf;
}

/* Starts `fmctl train ARGS...` with stdout and stderr on pipes. FM_DATA is
 * removed from its environment unless `keep_env`. */
static pid_t spawn(char *const *args, int keep_env, int *out_fd, int *err_fd) {
    int po[2], pe[2];
    if (pipe(po) || pipe(pe))
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(po[1], 1);
        dup2(pe[1], 2);
        close(po[0]);
        close(pe[0]);
        if (!keep_env)
            unsetenv("FM_DATA");
        char *argv[64];
        int n = 0;
        argv[n++] = (char *)FM_FMCTL;
        argv[n++] = (char *)"train";
        for (int i = 0; args[i] && n < 63; i++)
            argv[n++] = args[i];
        argv[n] = NULL;
        execv(FM_FMCTL, argv);
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    *out_fd = po[0];
    *err_fd = pe[0];
    return pid;
}

/* Runs to completion; returns the exit code (or 128 + signal). */
static int run(char *const *args, char **out, char **err) {
    int fo, fe;
    pid_t pid = spawn(args, 0, &fo, &fe);
    if (pid < 0)
        return -1;
    /* Outputs are small: reading one pipe to its end before the other cannot block the child. */
    char *o = slurp(fo), *e = slurp(fe);
    close(fo);
    close(fe);
    int st;
    waitpid(pid, &st, 0);
    if (out)
        *out = o;
    else
        free(o);
    if (err)
        *err = e;
    else
        free(e);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int exists(const char *dir, const char *name) {
    char p[1200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    struct stat st;
    return stat(p, &st) == 0;
}

static void usage_errors_exit_2(void) {
    char out_dir[1024];
    snprintf(out_dir, sizeof out_dir, "%s/never", fm_test_tmpdir());
    const char *d = fixtures(), *o = out_dir;
    /* Each case: the arguments, and a word the message must contain. */
    struct {
        const char *args[16];
        const char *needle;
    } cases[] = {
        {{NULL}, "--arch"},
        {{"--arch", "mlp", NULL}, "--out"},
        {{"--out", o, NULL}, "--arch"},
        {{"--arch", "rnn", "--out", o, "--data", d, NULL}, "--arch"},
        {{"--arch", "mlp", "--out", o, "--epochs", "0", NULL}, "--epochs"},
        {{"--arch", "mlp", "--out", o, "--epochs", "ten", NULL}, "--epochs"},
        {{"--arch", "mlp", "--out", o, "--epochs", "1.5", NULL}, "--epochs"},
        {{"--arch", "mlp", "--out", o, "--epochs", "", NULL}, "--epochs"},
        {{"--arch", "mlp", "--out", o, "--batch-size", "0", NULL}, "--batch-size"},
        {{"--arch", "mlp", "--out", o, "--batch-size", "99999999", NULL}, "--batch-size"},
        {{"--arch", "mlp", "--out", o, "--learning-rate", "-0.1", NULL}, "--learning-rate"},
        {{"--arch", "mlp", "--out", o, "--learning-rate", "nan", NULL}, "--learning-rate"},
        {{"--arch", "mlp", "--out", o, "--seed", "-3", NULL}, "--seed"},
        {{"--arch", "mlp", "--out", o, "--seed", "1e30", NULL}, "--seed"},
        {{"--arch", "mlp", "--out", o, "--threads", "-1", NULL}, "--threads"},
        {{"--arch", "mlp", "--out", o, "--val-split", "x", NULL}, "--val-split"},
        {{"--arch", "mlp", "--out", o, "--dropout", "1", NULL}, "--dropout"},
        {{"--arch", "mlp", "--out", o, "--optimizer", "rmsprop", NULL}, "--optimizer"},
        {{"--arch", "mlp", "--out", o, "--lr-schedule", "step", NULL}, "--lr-schedule"},
        {{"--arch", "mlp", "--out", o, "--frobnicate", NULL}, "--frobnicate"},
        {{"--arch", "mlp", "--out", o, "--epochs", NULL}, "--epochs"},
        {{"--arch", "mlp", "--out", o, "extra", NULL}, "extra"},
        {{"--arch", "mlp", "--out", o, "--epochs", "2", "--epochs", "3", NULL}, "twice"},
        {{"--arch", "mlp", "--out", o, "--data", d, "--val-split", "2000", NULL}, "val-split"},
        {{"--arch", "cnn", "--out", o, "--augment-flip", "--no-augment-flip", NULL}, "contradict"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *err = NULL;
        int rc = run((char *const *)cases[i].args, NULL, &err);
        if (rc != 2 || !err || !strstr(err, cases[i].needle)) {
            FM_TEST_FAIL_AT("case %zu (%s %s ...): exit %d, stderr: %s", i, cases[i].args[0] ? cases[i].args[0] : "",
                            cases[i].args[0] && cases[i].args[1] ? cases[i].args[1] : "", rc, err ? err : "");
        }
        free(err);
    }
    FM_CHECK(!exists(o, "model.json"));
    char *out = NULL;
    char *help[] = {"--help", NULL};
    FM_CHECK_EQ(run(help, &out, NULL), 0);
    FM_CHECK_CONTAINS(out, "--learning-rate");
    free(out);
}

static void missing_data_exits_1(void) {
    char out_dir[1024];
    snprintf(out_dir, sizeof out_dir, "%s/nodata", fm_test_tmpdir());
    char *args[] = {"--arch", "mlp", "--out", out_dir, "--data", "/nonexistent/fm-data", NULL};
    char *err = NULL;
    FM_CHECK_EQ(run(args, NULL, &err), 1);
    FM_CHECK_CONTAINS(err, "/nonexistent/fm-data");
    free(err);
    char *noflag[] = {"--arch", "mlp", "--out", out_dir, NULL}; /* and FM_DATA is unset */
    FM_CHECK_EQ(run(noflag, NULL, &err), 1);
    FM_CHECK_CONTAINS(err, "FM_DATA");
    free(err);
    FM_CHECK(!exists(out_dir, "model.json"));
}

/* Starts a long CNN run, waits for its first epoch line, sends `sig`. */
static void interrupted_by(int sig) {
    char out_dir[1024];
    snprintf(out_dir, sizeof out_dir, "%s/interrupted-%d", fm_test_tmpdir(), sig);
    char *args[] = {"--arch", "cnn", "--out", out_dir, "--data", (char *)fixtures(), "--epochs", "1000",
                    "--val-split", "100", "--batch-size", "50", NULL};
    int fo, fe;
    pid_t pid = spawn(args, 0, &fo, &fe);
    FM_REQUIRE(pid > 0);
    /* Read stdout until the first progress line. */
    char buf[8192];
    size_t len = 0;
    int seen = 0;
    uint64_t t0 = fm_now_us();
    while (!seen && len < sizeof buf - 1 && fm_now_us() - t0 < 120000000u) {
        ssize_t n = read(fo, buf + len, sizeof buf - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = 0;
        seen = strstr(buf, " 1/1000 ") != NULL;
    }
    FM_CHECK(seen);
    kill(pid, sig);
    uint64_t t_sig = fm_now_us();
    int st;
    waitpid(pid, &st, 0);
    double waited = (double)(fm_now_us() - t_sig) / 1e6;
    char *err = slurp(fe);
    close(fo);
    close(fe);
    FM_CHECK(WIFEXITED(st));
    FM_CHECK_EQ(WIFEXITED(st) ? WEXITSTATUS(st) : -1, 130);
    FM_CHECK_CONTAINS(err, "no model written");
    FM_CHECK(!exists(out_dir, "model.json"));
    FM_CHECK(!exists(out_dir, "model.safetensors"));
    /* fmctl created the directory, so it removes it again. */
    struct stat stt;
    FM_CHECK(stat(out_dir, &stt) != 0);
    /* The stop flag is polled between batches: the exit is prompt. */
    fprintf(stderr, "  signal %d: exit %d after %.2f s\n", sig, WIFEXITED(st) ? WEXITSTATUS(st) : -1, waited);
    FM_CHECK(waited < 20);
    free(err);
}

static void sigint_exits_130_without_model(void) { interrupted_by(SIGINT); }
static void sigterm_exits_130_without_model(void) { interrupted_by(SIGTERM); }

static void short_run_writes_a_model(void) {
    char out_dir[1024];
    snprintf(out_dir, sizeof out_dir, "%s/model", fm_test_tmpdir());
    char *args[] = {"--arch", "mlp", "--out", out_dir, "--data", (char *)fixtures(), "--epochs", "3", "--seed", "5",
                    "--val-split", "200", "--threads", "2", "--name", "fixture-mlp", "--version", "t1", NULL};
    setenv("FM_SOURCE_COMMIT", "0123456789abcdef-test", 1);
    char *out = NULL, *err = NULL;
    int rc = run(args, &out, &err);
    unsetenv("FM_SOURCE_COMMIT");
    FM_CHECK_EQ(rc, 0);
    if (rc)
        fprintf(stderr, "  stdout: %s\n  stderr: %s\n", out, err);
    FM_CHECK_CONTAINS(out, "epoch 1/3");
    FM_CHECK_CONTAINS(out, "epoch 3/3");
    FM_CHECK_CONTAINS(out, "val_acc");
    FM_CHECK_CONTAINS(out, "img/s");
    FM_CHECK_CONTAINS(out, "eta");
    FM_CHECK_CONTAINS(out, "test     accuracy");
    free(out);
    free(err);

    fm_model_t *m = NULL;
    FM_REQUIRE_OK(fm_model_load(out_dir, &m));
    FM_CHECK_EQ(fm_model_arch(m), FM_ARCH_MLP);
    FM_CHECK_STR(fm_model_name(m), "fixture-mlp");
    FM_CHECK_STR(fm_model_version(m), "t1");
    FM_CHECK_STR(fm_model_meta_get_string(m, NULL, "source_commit"), "0123456789abcdef-test");
    double v;
    FM_CHECK_OK(fm_model_meta_get_number(m, "training", "epochs", &v));
    FM_CHECK_EQ(v, 3);
    FM_CHECK_OK(fm_model_meta_get_number(m, "training", "seed", &v));
    FM_CHECK_EQ(v, 5);
    FM_CHECK_OK(fm_model_meta_get_number(m, "training", "batch_size", &v));
    FM_CHECK_EQ(v, 128);
    FM_CHECK_OK(fm_model_meta_get_number(m, "training", "learning_rate", &v));
    FM_CHECK_NEAR(v, 1e-3, 1e-12);
    FM_CHECK_OK(fm_model_meta_get_number(m, "training", "validation_split", &v));
    FM_CHECK_EQ(v, 200);
    FM_CHECK_OK(fm_model_meta_get_number(m, "training", "train_images", &v));
    FM_CHECK_EQ(v, 1800);
    FM_CHECK_OK(fm_model_meta_get_number(m, "training", "threads", &v));
    FM_CHECK_EQ(v, 2);
    FM_CHECK_OK(fm_model_meta_get_number(m, "training", "seconds", &v));
    FM_CHECK(v >= 0);
    FM_CHECK_STR(fm_model_meta_get_string(m, "training", "optimizer"), "adam");
    double tacc, vacc, tracc;
    FM_CHECK_OK(fm_model_meta_get_number(m, "metrics", "test_accuracy", &tacc));
    FM_CHECK_OK(fm_model_meta_get_number(m, "metrics", "val_accuracy", &vacc));
    FM_CHECK_OK(fm_model_meta_get_number(m, "metrics", "train_accuracy", &tracc));
    FM_CHECK_OK(fm_model_meta_get_number(m, "metrics", "train_loss", &v));
    FM_CHECK_OK(fm_model_meta_get_number(m, "metrics", "val_loss", &v));
    FM_CHECK(tacc > 0.6 && tacc <= 1);
    FM_CHECK(vacc > 0.6 && vacc <= 1);
    /* The digest of the fixture's training files, as the loader computes it. */
    fm_dataset_t ds;
    FM_REQUIRE_OK(fm_dataset_load(fixtures(), "train", &ds));
    FM_CHECK_STR(fm_model_meta_get_string(m, "training_data", "sha256"), ds.sha256);
    FM_CHECK_STR(fm_model_meta_get_string(m, "training_data", "files"),
                 "train-images-idx3-ubyte.gz,train-labels-idx1-ubyte.gz");
    fm_dataset_free(&ds);
    fm_model_free(m);
}

/* Without FM_SOURCE_COMMIT the commit captured at configure time is used. */
static void source_commit_from_the_build(void) {
    char out_dir[1024];
    snprintf(out_dir, sizeof out_dir, "%s/model-commit", fm_test_tmpdir());
    char *args[] = {"--arch", "mlp", "--out", out_dir, "--data", (char *)fixtures(), "--epochs", "1", "--val-split",
                    "0", "--quiet", NULL};
    unsetenv("FM_SOURCE_COMMIT");
    FM_REQUIRE(run(args, NULL, NULL) == 0);
    fm_model_t *m = NULL;
    FM_REQUIRE_OK(fm_model_load(out_dir, &m));
    const char *c = fm_model_meta_get_string(m, NULL, "source_commit");
    FM_REQUIRE(c);
    fprintf(stderr, "  source_commit %s\n", c);
    /* 40 hex digits, optionally "-dirty"; "unknown" only outside a git checkout. */
    size_t hex = strspn(c, "0123456789abcdef");
    FM_CHECK((hex == 40 && (c[40] == 0 || strcmp(c + 40, "-dirty") == 0)) || strcmp(c, "unknown") == 0);
    double v;
    FM_CHECK_ERR(fm_model_meta_get_number(m, "metrics", "val_accuracy", &v), FM_ENOTFOUND); /* no split */
    fm_model_free(m);
}

FM_TEST_MAIN({"usage_errors_exit_2", usage_errors_exit_2}, {"missing_data_exits_1", missing_data_exits_1},
             {"sigint_exits_130_without_model", sigint_exits_130_without_model},
             {"sigterm_exits_130_without_model", sigterm_exits_130_without_model},
             {"short_run_writes_a_model", short_run_writes_a_model},
             {"source_commit_from_the_build", source_commit_from_the_build})
