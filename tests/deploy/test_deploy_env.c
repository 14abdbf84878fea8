/* test_deploy_env.c: the configuration the deployments hand fmserve, run
 * against the real server. For the Kubernetes overlays (gpu, cpu) and the
 * compose stack (with and without the GPU override), on top of the image's
 * ENV: every FM_* variable they set is one fmserve's option table or another
 * component reads (a misspelt or renamed variable is otherwise silently
 * ignored); fmserve accepts every value and becomes ready; the image's
 * HEALTHCHECK command passes against it and fails once it is gone; SIGTERM
 * drains with the configured grace period and exits 0.
 *
 * The environments come from scripts/deploy/deploy_env.py (the test venv's
 * Python, FM_TEST_PYTHON). Test-only substitutions, each printed: the models
 * (written by the server test harness instead of the image's
 * /opt/fmserve/models), the spool directory, the database URL (left unset),
 * the backend (cpu: no GPU here; the cuda value is checked by name and by
 * the option's choices) and the ports (the harness binds free loopback
 * ports; flags outrank the environment). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fm_srv_harness.h"
#include "fm_test.h"

#ifndef FM_DEPLOY_ROOT
#error FM_DEPLOY_ROOT must name the repository root
#endif

/* Variables the deployments may set that fmserve's option table does not
 * list, with the component that reads them. */
static const char *const other_readers[] = {
    "FM_LOG_FORMAT",       /* host/common/fm_log.c */
    "FM_LOG_LEVEL",        /* host/common/fm_log.c */
    "FM_DATABASE_URL",     /* prediction log and fmctl db/drift (PostgreSQL) */
    "FM_SAMPLE_RATE",      /* prediction log: share of inputs sampled */
    "FM_SPOOL_DIR",        /* prediction log: spill directory while the database is down */
    "FM_DRIFT_INTERVAL_MIN", /* docker/fm-drift-loop.sh */
};

static const char *const sources[] = {"k8s/overlays/gpu", "k8s/overlays/cpu", "compose", "compose-gpu"};

/* Runs a shell command; its stdout (malloc'd) or NULL when it fails. */
static char *capture(const char *cmd) {
    FILE *p = popen(cmd, "r");
    if (!p)
        return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + len, 1, cap - len - 1, p)) > 0) {
        len += got;
        if (cap - len < 2) {
            char *bigger = realloc(buf, cap * 2);
            if (!bigger) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = bigger;
            cap *= 2;
        }
    }
    int status = pclose(p);
    if (!buf || status != 0) {
        if (buf)
            fprintf(stderr, "  `%s` failed (status %d): %.*s\n", cmd, status, (int)len, buf);
        free(buf);
        return NULL;
    }
    buf[len] = '\0';
    return buf;
}

/* The venv's python with PyYAML, or NULL (the reason set). */
static const char *python(const char **why) {
    const char *py = getenv("FM_TEST_PYTHON");
    static char cmd[1024];
    if (!py || access(py, X_OK) != 0) {
        *why = "FM_TEST_PYTHON (the test venv made by scripts/test-env.sh) is missing";
        return NULL;
    }
    snprintf(cmd, sizeof cmd, "'%s' -c 'import yaml' 2>/dev/null", py);
    if (system(cmd) != 0) {
        *why = "the test venv lacks PyYAML (pip install -r tests/requirements.txt)";
        return NULL;
    }
    return py;
}

static char *deploy_env(const char *py, const char *source) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' '%s/scripts/deploy/deploy_env.py' '%s' '%s'", py, FM_DEPLOY_ROOT, FM_DEPLOY_ROOT,
             source);
    return capture(cmd);
}

/* The Environment column of `fmserve --config-markdown`. */
static char *fmserve_env_names(void) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' --config-markdown", FMSERVE_BIN);
    return capture(cmd);
}

static int known_name(const char *table, const char *name) {
    char needle[160];
    snprintf(needle, sizeof needle, "| `%s` |", name);
    if (strstr(table, needle))
        return 1;
    for (size_t i = 0; i < sizeof other_readers / sizeof other_readers[0]; i++)
        if (strcmp(other_readers[i], name) == 0)
            return 1;
    return 0;
}

static void test_every_variable_is_read_by_something(void) {
    const char *why = NULL, *py = python(&why);
    if (!py) {
        if (getenv("FM_REQUIRE_DEPLOY_LINT") && strcmp(getenv("FM_REQUIRE_DEPLOY_LINT"), "1") == 0) {
            FM_TEST_FAIL_AT("%s", why);
            return;
        }
        FM_TEST_SKIP(why);
    }
    char *table = fmserve_env_names();
    FM_REQUIRE(table != NULL);
    const char *all[] = {sources[0], sources[1], sources[2], sources[3], "docker/Dockerfile.cpu",
                         "docker/Dockerfile.gpu"};
    int checked = 0;
    for (size_t s = 0; s < sizeof all / sizeof all[0]; s++) {
        char *env = deploy_env(py, all[s]);
        FM_CHECK(env != NULL);
        if (!env)
            continue;
        for (char *line = strtok(env, "\n"); line; line = strtok(NULL, "\n")) {
            char name[128];
            snprintf(name, sizeof name, "%.*s", (int)strcspn(line, "="), line);
            if (strncmp(name, "FM_", 3) != 0 && strncmp(name, "AB_", 3) != 0)
                continue;
            checked++;
            if (!known_name(table, name))
                FM_TEST_FAIL_AT("%s sets %s, which neither fmserve's option table (fmserve --config-markdown) "
                                "nor another component reads",
                                all[s], name);
        }
        free(env);
    }
    printf("  %d variable settings checked against fmserve's option table\n", checked);
    free(table);
}

/* Adds NAME=value to a NULL-terminated list of malloc'd strings. */
static void put(char **list, int *n, int max, const char *name, const char *value) {
    size_t len = strlen(name);
    for (int i = 0; i < *n; i++)
        if (strncmp(list[i], name, len) == 0 && list[i][len] == '=') {
            free(list[i]);
            list[i] = NULL;
            if (asprintf(&list[i], "%s=%s", name, value) < 0)
                list[i] = NULL;
            return;
        }
    if (*n < max - 1 && asprintf(&list[*n], "%s=%s", name, value) >= 0)
        (*n)++;
    list[*n] = NULL;
}

static void add_lines(char **list, int *n, int max, char *text) {
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        *eq = '\0';
        put(list, n, max, line, eq + 1);
    }
}

static int run_healthcheck(const char *cmd, int http_port) {
    char port[16];
    snprintf(port, sizeof port, "%d", http_port);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        setenv("FM_HTTP_PORT", port, 1);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static void serve_with(const char *source) {
    const char *why = NULL, *py = python(&why);
    if (!py) {
        if (getenv("FM_REQUIRE_DEPLOY_LINT") && strcmp(getenv("FM_REQUIRE_DEPLOY_LINT"), "1") == 0) {
            FM_TEST_FAIL_AT("%s", why);
            return;
        }
        FM_TEST_SKIP(why);
    }
    int gpu = strstr(source, "gpu") != NULL;
    char *image = deploy_env(py, gpu ? "docker/Dockerfile.gpu" : "docker/Dockerfile.cpu");
    char *deployment = deploy_env(py, source);
    char *health = deploy_env(py, gpu ? "healthcheck:docker/Dockerfile.gpu" : "healthcheck:docker/Dockerfile.cpu");
    FM_REQUIRE(image && deployment && health);
    health[strcspn(health, "\n")] = '\0';

    enum { MAX = 64 };
    char *env[MAX] = {0};
    int n = 0;
    add_lines(env, &n, MAX, image);
    add_lines(env, &n, MAX, deployment);
    char *v1 = fm_test_path(fm_srv_models_dir(), "v1"), *v2 = fm_test_path(fm_srv_models_dir(), "v2");
    char *spool = fm_test_path(fm_test_tmpdir(), "spool");
    put(env, &n, MAX, "FM_STABLE_MODEL", v1);
    put(env, &n, MAX, "FM_CANARY_MODEL", v2);
    put(env, &n, MAX, "FM_SPOOL_DIR", spool);
    put(env, &n, MAX, "FM_BACKEND", "cpu");
    /* Secrets are placeholders here, and the database is not part of this test. */
    for (int i = 0; i < n; i++)
        if (strstr(env[i], "=<secret>") || strncmp(env[i], "FM_DATABASE_URL=", 16) == 0) {
            free(env[i]);
            env[i] = env[--n];
            env[n] = NULL;
            i--;
        }
    printf("  %s: fmserve with %d variables (models, spool, FM_BACKEND=cpu and ports replaced for the test)\n",
           source, n);

    fm_srv_t s;
    int started = fm_srv_start(&s, NULL, (const char *const *)env) == 0;
    FM_CHECK(started);
    if (started) {
        char *body = NULL;
        FM_CHECK_EQ(fm_srv_http_get(s.http_port, "/health", &body), 200);
        free(body);
        body = NULL;
        FM_CHECK_EQ(fm_srv_http_get(s.http_port, "/ready", &body), 200);
        free(body);
        FM_CHECK_EQ(run_healthcheck(health, s.http_port), 0);
        /* The drain must run with the deployment's timeout, not the default. */
        const char *drain = NULL;
        for (int i = 0; i < n; i++)
            if (strncmp(env[i], "FM_DRAIN_TIMEOUT_MS=", 20) == 0)
                drain = env[i] + 20;
        FM_CHECK(drain != NULL);
        char grace[64];
        snprintf(grace, sizeof grace, "(grace %s ms)", drain ? drain : "?");
        int rc = fm_srv_stop(&s, SIGTERM, 60000);
        FM_CHECK_EQ(rc, 0);
        FM_CHECK(fm_srv_log_contains(&s, grace));
        if (rc != 0 || !fm_srv_log_contains(&s, grace))
            fm_srv_dump_log(&s);
        /* The HEALTHCHECK must fail once nothing answers on the port. */
        FM_CHECK_EQ(run_healthcheck(health, s.http_port), 1);
    }
    for (int i = 0; i < n; i++)
        free(env[i]);
    free(v1);
    free(v2);
    free(spool);
    free(image);
    free(deployment);
    free(health);
}

static void test_k8s_gpu(void) { serve_with(sources[0]); }
static void test_k8s_cpu(void) { serve_with(sources[1]); }
static void test_compose(void) { serve_with(sources[2]); }
static void test_compose_gpu(void) { serve_with(sources[3]); }

FM_TEST_MAIN({"every_variable_is_read_by_something", test_every_variable_is_read_by_something},
             {"k8s_gpu_overlay", test_k8s_gpu}, {"k8s_cpu_overlay", test_k8s_cpu}, {"compose", test_compose},
             {"compose_gpu_override", test_compose_gpu})
