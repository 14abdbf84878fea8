/* test_config.c: fmserve's configuration: the generated option table is the
 * one in docs/configuration.md, every bad value is refused with exit code 2
 * and a message naming the option and the problem, and the precedence
 * flag > environment > config file > default holds. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fm_srv_harness.h"
#include "fm_test.h"

extern char **environ;

/* Runs fmserve with exactly `args` and `env` added to a cleaned environment;
 * returns its exit code with stdout and stderr in *out (malloc'd). */
static int run(const char *const *args, const char *const *env, char **out) {
    char path[512];
    snprintf(path, sizeof path, "%s/run-%d.out", fm_test_tmpdir(), (int)getpid());
    fflush(NULL); /* a child must not inherit and re-print buffered output */
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
        for (char **e = environ; *e;) {
            if (strncmp(*e, "FM_", 3) == 0 || strncmp(*e, "AB_TEST_RATIO=", 14) == 0) {
                char name[256];
                size_t n = strcspn(*e, "=");
                snprintf(name, sizeof name, "%.*s", (int)n, *e);
                unsetenv(name);
                e = environ;
                continue;
            }
            e++;
        }
        for (int i = 0; env && env[i]; i++)
            putenv((char *)env[i]);
        const char *argv[64] = {FMSERVE_BIN};
        int a = 1;
        for (int i = 0; args && args[i] && a < 63; i++)
            argv[a++] = args[i];
        argv[a] = NULL;
        execv(FMSERVE_BIN, (char *const *)argv);
        _exit(127);
    }
    int status;
    waitpid(pid, &status, 0);
    FILE *f = fopen(path, "r");
    size_t cap = 1 << 16, len = 0;
    *out = calloc(1, cap);
    if (f) {
        len = fread(*out, 1, cap - 1, f);
        fclose(f);
    }
    (*out)[len] = '\0';
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = '\0';
    fclose(f);
    return s;
}

static void test_docs_table_matches(void) {
    char *out;
    const char *args[] = {"--config-markdown", NULL};
    FM_REQUIRE(run(args, NULL, &out) == 0);
    char *path = fm_test_path(FM_SOURCE_DIR, "docs/configuration.md");
    char *doc = read_text(path);
    free(path);
    FM_REQUIRE(doc);
    const char *begin = "<!-- BEGIN fmserve --config-markdown -->\n", *end = "<!-- END fmserve --config-markdown -->";
    char *b = strstr(doc, begin), *e = b ? strstr(b, end) : NULL;
    FM_REQUIRE(b && e);
    b += strlen(begin);
    size_t len = (size_t)(e - b);
    if (strlen(out) != len || strncmp(out, b, len) != 0)
        FM_TEST_FAIL_AT("docs/configuration.md is out of date: regenerate the table with `fmserve --config-markdown`");
    /* Every option row is there. */
    FM_CHECK_CONTAINS(out, "`AB_TEST_RATIO`");
    FM_CHECK_CONTAINS(out, "`FM_AUTH_TOKEN`");
    FM_CHECK_CONTAINS(out, "`--max-queue-delay-us`");
    free(doc);
    free(out);
}

typedef struct bad_case {
    const char *args[6];
    const char *env[3];
    const char *needles[3];
} bad_case_t;

static void test_bad_values_exit_2(void) {
    static const bad_case_t cases[] = {
        {{"--port", "70000"}, {0}, {"--port", "70000", "65535"}},
        {{0}, {"AB_TEST_RATIO=1.5"}, {"AB_TEST_RATIO", "1.5", "0..1"}},
        {{0}, {"AB_TEST_RATIO=lots"}, {"AB_TEST_RATIO", "not a number"}},
        {{"--backend", "gpu"}, {0}, {"--backend", "auto|cpu|cuda"}},
        {{"--bogus"}, {0}, {"unknown option '--bogus'"}},
        {{"--port"}, {0}, {"--port needs a value"}},
        {{"--cuda-graphs=maybe"}, {0}, {"--cuda-graphs", "not a boolean"}},
        {{"--max-images-per-request", "8192"}, {0}, {"--max-images-per-request", "--max-message-bytes"}},
        {{"--max-queue-size", "100"}, {0}, {"--max-queue-size", "--max-images-per-request"}},
        {{"--precision", "fp16", "--backend", "cpu"}, {0}, {"--precision", "cuda"}},
        {{"--port", "7070", "--http-port", "7070"}, {0}, {"--port and --http-port"}},
        {{"--stable-model", ""}, {0}, {"--stable-model", "required"}},
        {{0}, {"FM_AUTH_TOKEN=same", "FM_ADMIN_TOKEN=same"}, {"FM_ADMIN_TOKEN", "must differ"}},
        {{"--config", "/nonexistent/fmserve.conf"}, {0}, {"/nonexistent/fmserve.conf"}},
        {{"stray"}, {0}, {"unexpected argument 'stray'"}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *out;
        int code = run(cases[i].args, cases[i].env, &out);
        if (code != 2)
            FM_TEST_FAIL_AT("case %zu (%s): exit %d, expected 2; output: %s", i,
                            cases[i].args[0] ? cases[i].args[0] : cases[i].env[0], code, out);
        FM_CHECK_CONTAINS(out, "configuration error");
        for (int k = 0; k < 3 && cases[i].needles[k]; k++)
            FM_CHECK_CONTAINS(out, cases[i].needles[k]);
        free(out);
    }
}

static void test_config_file_errors(void) {
    char *cfg = fm_test_path(fm_test_tmpdir(), "bad.conf");
    FILE *f = fopen(cfg, "w");
    fputs("# comment\n\nmax_batch_size = abc\n", f);
    fclose(f);
    const char *args[] = {"--config", cfg, NULL};
    char *out;
    FM_CHECK_EQ(run(args, NULL, &out), 2);
    FM_CHECK_CONTAINS(out, "max_batch_size");
    FM_CHECK_CONTAINS(out, "not an integer");
    FM_CHECK_CONTAINS(out, "bad.conf:3");
    free(out);
    f = fopen(cfg, "w");
    fputs("stable_model = models/v1\ncolour = blue\n", f);
    fclose(f);
    FM_CHECK_EQ(run(args, NULL, &out), 2);
    FM_CHECK_CONTAINS(out, "bad.conf:2");
    FM_CHECK_CONTAINS(out, "unknown option 'colour'");
    free(out);
    f = fopen(cfg, "w");
    fputs("just words\n", f);
    fclose(f);
    FM_CHECK_EQ(run(args, NULL, &out), 2);
    FM_CHECK_CONTAINS(out, "name = value");
    free(out);
    free(cfg);
}

static void test_help_and_version(void) {
    char *out;
    const char *help[] = {"--help", NULL};
    FM_CHECK_EQ(run(help, NULL, &out), 0);
    static const char *const expect[] = {"--port", "--http-port", "--stable-model", "--canary-model", "--backend",
                                         "--cuda-streams", "--precision", "--cuda-graphs", "--cpu-workers",
                                         "--cpu-threads-per-batch", "--max-batch-size", "--max-queue-delay-us",
                                         "--max-queue-size", "--ab-test-ratio", "AB_TEST_RATIO", "FM_AUTH_TOKEN",
                                         "FM_ADMIN_TOKEN", "--max-message-bytes", "--max-images-per-request",
                                         "--max-connections", "--max-inflight-per-connection", "--drain-timeout-ms"};
    for (size_t i = 0; i < sizeof expect / sizeof expect[0]; i++)
        FM_CHECK_CONTAINS(out, expect[i]);
    free(out);
    const char *version[] = {"--version", NULL};
    FM_CHECK_EQ(run(version, NULL, &out), 0);
    FM_CHECK_CONTAINS(out, "fmserve ");
    free(out);
}

static void test_precedence(void) {
    char *v1 = fm_test_path(fm_srv_models_dir(), "v1");
    char *cfg = fm_test_path(fm_test_tmpdir(), "prec.conf");
    FILE *f = fopen(cfg, "w");
    fprintf(f, "stable_model = \"%s\"\ncanary_model =\nmax_batch_size = 8\n", v1);
    fclose(f);
    static const struct {
        int with_env, with_flag;
        const char *expect;
    } cases[] = {{0, 0, "max_batch_size 8,"}, {1, 0, "max_batch_size 16,"}, {1, 1, "max_batch_size 32,"}};
    for (int i = 0; i < 3; i++) {
        const char *args[] = {"--config", cfg, cases[i].with_flag ? "--max-batch-size" : NULL, "32", NULL};
        const char *env[] = {cases[i].with_env ? "FM_MAX_BATCH_SIZE=16" : NULL, NULL};
        fm_srv_t s;
        FM_REQUIRE_OK(fm_srv_start(&s, args, env));
        FM_CHECK(fm_srv_log_contains(&s, cases[i].expect));
        FM_CHECK_EQ(fm_srv_stop(&s, SIGTERM, 30000), 0);
    }
    free(cfg);
    free(v1);
}

FM_TEST_MAIN({"docs_table_matches", test_docs_table_matches}, {"bad_values_exit_2", test_bad_values_exit_2},
             {"config_file_errors", test_config_file_errors}, {"help_and_version", test_help_and_version},
             {"precedence", test_precedence})
