/* test_clients_python.c: the Python client in docs/clients.md, extracted
 * from the page as it is and run with the test virtual environment's
 * Python (FM_TEST_PYTHON, which has the msgpack package) against a real
 * fmserve: its labels must equal the offline engine's. Skips, saying why,
 * when that Python or its msgpack package is missing. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fm_srv_harness.h"
#include "fm_test.h"

/* The first ```python block after the "tested:" marker. */
static char *extract_example(void) {
    char *path = fm_test_path(FM_SOURCE_DIR, "docs/clients.md");
    FILE *f = fopen(path, "r");
    free(path);
    if (!f)
        return NULL;
    static char doc[1 << 17];
    size_t n = fread(doc, 1, sizeof doc - 1, f);
    fclose(f);
    doc[n] = '\0';
    char *m = strstr(doc, "<!-- tested: tests/server/test_clients_python.c -->");
    char *b = m ? strstr(m, "```python\n") : NULL;
    char *e = b ? strstr(b + 10, "\n```") : NULL;
    if (!e)
        return NULL;
    b += 10;
    char *out = malloc((size_t)(e - b) + 2);
    memcpy(out, b, (size_t)(e - b));
    out[e - b] = '\n';
    out[e - b + 1] = '\0';
    return out;
}

static int run_python(const char *py, const char *script, const char *addr, const char *images, const char *count,
                      const char *token, char **out) {
    char path[512];
    snprintf(path, sizeof path, "%s/py-%d.out", fm_test_tmpdir(), (int)getpid());
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen(path, "w", stdout))
            _exit(126);
        dup2(1, 2); /* one file description: stdout and stderr interleave, never overwrite */
        if (token)
            setenv("FM_AUTH_TOKEN", token, 1);
        else
            unsetenv("FM_AUTH_TOKEN");
        execl(py, py, script, addr, images, count, (char *)NULL);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    FILE *f = fopen(path, "r");
    *out = calloc(1, 1 << 16);
    if (f) {
        size_t n = fread(*out, 1, (1 << 16) - 1, f);
        (*out)[n] = '\0';
        fclose(f);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void test_documented_example(void) {
    const char *py = fm_srv_python();
    if (!py)
        FM_TEST_SKIP("FM_TEST_PYTHON is unset or its Python lacks the msgpack package (scripts/test-env.sh makes it)");
    char *code = extract_example();
    FM_REQUIRE(code);
    char *script = fm_test_path(fm_test_tmpdir(), "fmclient.py");
    FILE *f = fopen(script, "w");
    FM_REQUIRE(f);
    fputs(code, f);
    fclose(f);
    free(code);

    fm_dataset_t ds;
    FM_REQUIRE_OK(fm_srv_fixture(&ds));
    char *v1 = fm_test_path(fm_srv_models_dir(), "v1"), *v2 = fm_test_path(fm_srv_models_dir(), "v2");
    int32_t want[2][20];
    FM_REQUIRE_OK(fm_srv_offline(v1, ds.images, 20, want[0], NULL));
    FM_REQUIRE_OK(fm_srv_offline(v2, ds.images, 20, want[1], NULL));
    fm_srv_t s;
    const char *args[] = {"--stable-model", v1, "--canary-model", v2, NULL};
    const char *env[] = {"AB_TEST_RATIO=0.5", "FM_AUTH_TOKEN=py-secret", NULL};
    FM_REQUIRE_OK(fm_srv_start(&s, args, env));
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", s.rpc_port);
    char *images = fm_test_path(fm_test_fixtures_dir(), "fashion-mnist/t10k-images-idx3-ubyte.gz");

    char *out;
    FM_CHECK_EQ(run_python(py, script, addr, images, "20", "py-secret", &out), 0);
    int lines = 0, wrong = 0;
    for (char *line = out; line && *line;) {
        int idx, label;
        char cls[32], conf[32], role[16], version[16];
        if (sscanf(line, "%d %d %31s %31s %15s %15s", &idx, &label, cls, conf, role, version) == 6) {
            int v = strcmp(role, "canary") == 0;
            FM_CHECK(strcmp(version, v ? "v2" : "v1") == 0);
            if (idx < 0 || idx >= 20 || want[v][idx] != label)
                wrong++;
            lines++;
        }
        char *nl = strchr(line, '\n');
        line = nl ? nl + 1 : NULL;
    }
    FM_CHECK_EQ(lines, 20);
    FM_CHECK_EQ(wrong, 0);
    FM_CHECK_CONTAINS(out, "serving: stable v1, canary v2");
    free(out);
    /* A wrong token surfaces as the server's error. */
    FM_CHECK(run_python(py, script, addr, images, "3", "nope", &out) != 0);
    FM_CHECK_CONTAINS(out, "UNAUTHENTICATED");
    free(out);
    FM_CHECK_EQ(fm_srv_stop(&s, SIGTERM, 30000), 0);
    free(images);
    free(script);
    free(v1);
    free(v2);
    fm_dataset_free(&ds);
}

FM_TEST_MAIN({"documented_example", test_documented_example})
