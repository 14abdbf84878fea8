/* regtest.c: helpers of the lifecycle tests (see regtest.h). */
#include "regtest.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dbtest.h"
#include "fm_error.h"
#include "fm_model.h"
#include "fm_ref_forward.h"
#include "fm_test.h"
#include "fm_time.h"

int regtest_write_model(const char *dir, int cnn, uint64_t seed, const char *version, double test_accuracy,
                        const char *run_id) {
    fm_model_t *m = fm_model_new(cnn ? FM_ARCH_CNN : FM_ARCH_MLP);
    if (!m)
        return FM_ENOMEM;
    fm_ref_random_init(m, seed, 2.5);
    fm_model_set_identity(m, cnn ? "fashion-mnist-cnn" : "fashion-mnist-mlp", version);
    fm_model_meta_set_number(m, "metrics", "test_accuracy", test_accuracy);
    fm_model_meta_set_number(m, "metrics", "test_loss", 1.0 - test_accuracy);
    if (run_id) {
        fm_model_meta_set_string(m, "mlflow", "run_id", run_id);
        fm_model_meta_set_string(m, "mlflow", "registered_model", cnn ? "fashion-mnist-cnn" : "fashion-mnist-mlp");
        fm_model_meta_set_string(m, "mlflow", "model_version", "7");
    }
    int rc = fm_model_save(m, dir);
    fm_model_free(m);
    return rc;
}

int regtest_corrupt(const char *dir) {
    char *p = fm_test_path(dir, "model.safetensors");
    FILE *f = fopen(p, "r+b");
    free(p);
    if (!f)
        return fm_fail(FM_EIO, "corrupt: %s", strerror(errno));
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, n / 2, SEEK_SET);
    int c = fgetc(f);
    fseek(f, n / 2, SEEK_SET);
    fputc(c ^ 0x5a, f);
    fclose(f);
    return 0;
}

int regtest_model_sha(const char *dir, char sha[65]) {
    fm_model_t *m;
    int rc = fm_model_load(dir, &m);
    if (rc)
        return rc;
    snprintf(sha, 65, "%s", fm_model_weights_sha256(m));
    fm_model_free(m);
    return 0;
}

const char *regtest_fmctl_path(void) { return dbtest_fmctl(); }

int regtest_fmctl(const char *url, const char *args, char **out) {
    size_t n = strlen(args) + (url ? strlen(url) : 0) + 1200;
    char *cmd = malloc(n);
    if (!cmd)
        return -1;
    if (url)
        snprintf(cmd, n, "FM_DATABASE_URL='%s' FM_LOG_LEVEL=warn '%s' %s", url, dbtest_fmctl(), args);
    else
        snprintf(cmd, n, "env -u FM_DATABASE_URL FM_LOG_LEVEL=warn '%s' %s", dbtest_fmctl(), args);
    int rc = dbtest_run(cmd, out);
    free(cmd);
    return rc;
}

/* ---- HTTP -------------------------------------------------------------- */

typedef struct buf {
    char *p;
    size_t len, cap;
} buf_t;

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *user) {
    buf_t *b = user;
    size_t n = size * nmemb;
    if (b->len + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 65536;
        while (nc < b->len + n + 1)
            nc *= 2;
        char *q = realloc(b->p, nc);
        if (!q)
            return 0;
        b->p = q;
        b->cap = nc;
    }
    memcpy(b->p + b->len, ptr, n);
    b->len += n;
    b->p[b->len] = '\0';
    return n;
}

char *regtest_get_bytes(const char *url, size_t *len, long *http) {
    CURL *c = curl_easy_init();
    if (!c)
        return NULL;
    buf_t b = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 20000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    CURLcode cc = curl_easy_perform(c);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    if (http)
        *http = code;
    if (cc != CURLE_OK) {
        free(b.p);
        return NULL;
    }
    if (!b.p)
        b.p = calloc(1, 1);
    if (len)
        *len = b.len;
    return b.p;
}

cJSON *regtest_get_json(const char *url, long *http) {
    size_t len;
    char *body = regtest_get_bytes(url, &len, http);
    if (!body)
        return NULL;
    cJSON *j = cJSON_ParseWithLength(body, len);
    free(body);
    return j;
}

int regtest_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

/* ---- the MLflow server ------------------------------------------------- */

static pid_t mlflow_pid = -1;
static int watchdog_fd = -1;
static int mlflow_started;

static void stop_group(pid_t pgid) {
    if (pgid <= 0)
        return;
    kill(-pgid, SIGTERM);
    for (int i = 0; i < 100; i++) {
        if (waitpid(pgid, NULL, WNOHANG) == pgid || (kill(pgid, 0) != 0 && errno == ESRCH))
            break;
        usleep(50000);
    }
    kill(-pgid, SIGKILL); /* gunicorn's workers, whatever is left */
    waitpid(pgid, NULL, WNOHANG);
}

static void stop_mlflow(void) {
    mlflow_started = 0;
    stop_group(mlflow_pid);
    mlflow_pid = -1;
    if (watchdog_fd >= 0)
        close(watchdog_fd);
    watchdog_fd = -1;
}

/* A process outside the test's group that stops the server when the test
 * dies without running its atexit handlers (a crash, a timeout kill). */
static void start_watchdog(pid_t pgid) {
    int p[2];
    if (pipe(p) != 0)
        return;
    pid_t w = fork();
    if (w == 0) {
        setsid();
        close(p[1]);
        /* Not holding the test's output open: CTest waits for it to close. */
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
            close(null);
        }
        char c;
        while (read(p[0], &c, 1) > 0) {
        }
        kill(-pgid, SIGTERM);
        sleep(2);
        kill(-pgid, SIGKILL);
        _exit(0);
    }
    close(p[0]);
    if (w > 0) {
        watchdog_fd = p[1];
        fcntl(watchdog_fd, F_SETFD, FD_CLOEXEC);
    } else {
        close(p[1]);
    }
}

void regtest_mlflow_stop(void) { stop_mlflow(); }

int regtest_mlflow_start(char *url, size_t cap) {
    static char base[128];
    static int atexit_done;
    if (mlflow_started) {
        snprintf(url, cap, "%s", base);
        return 0;
    }
    const char *py = getenv("FM_TEST_PYTHON");
    if (!py || access(py, X_OK) != 0)
        return fm_fail(FM_EUNSUPPORTED, "FM_TEST_PYTHON is not an interpreter (scripts/test-env.sh BUILD_DIR makes "
                                        "the venv with mlflow from tests/requirements.txt)");
    char cmd[1200];
    snprintf(cmd, sizeof cmd,
             "'%s' -c 'import sys, mlflow; sys.exit(0 if mlflow.__version__.startswith(\"2.\") else 1)' "
             ">/dev/null 2>&1",
             py);
    if (system(cmd) != 0)
        return fm_fail(FM_EUNSUPPORTED, "the test venv (%s) has no mlflow 2.x: pip install 'mlflow<3' there "
                                        "(scripts/test-env.sh installs tests/requirements.txt)",
                       py);
    char pycopy[1024];
    snprintf(pycopy, sizeof pycopy, "%s", py);
    char *bindir = dirname(pycopy);
    char mlflow_bin[1100];
    snprintf(mlflow_bin, sizeof mlflow_bin, "%s/mlflow", bindir);
    if (access(mlflow_bin, X_OK) != 0)
        return fm_fail(FM_EUNSUPPORTED, "%s: no mlflow command next to the test interpreter", mlflow_bin);
    char *dir = fm_test_path(fm_test_tmpdir(), "mlflow");
    mkdir(dir, 0755);
    char store[1200], artifacts[1200], logpath[1200], portstr[16];
    snprintf(store, sizeof store, "sqlite:///%s/mlflow.db", dir);
    snprintf(artifacts, sizeof artifacts, "%s/artifacts", dir);
    snprintf(logpath, sizeof logpath, "%s/server.log", dir);
    int port = regtest_free_port();
    if (port <= 0)
        return fm_fail(FM_EIO, "no free port");
    snprintf(portstr, sizeof portstr, "%d", port);
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return fm_fail(FM_EIO, "fork: %s", strerror(errno));
    if (pid == 0) {
        setsid(); /* its own group: stopping it reaches gunicorn's workers */
        int fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execl(mlflow_bin, "mlflow", "server", "--backend-store-uri", store, "--artifacts-destination", artifacts,
              "--host", "127.0.0.1", "--port", portstr, "--workers", "1", (char *)NULL);
        _exit(127);
    }
    mlflow_pid = pid;
    start_watchdog(pid);
    if (!atexit_done)
        atexit(stop_mlflow);
    atexit_done = 1;
    snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
    char health[160];
    snprintf(health, sizeof health, "%s/health", base);
    uint64_t t0 = fm_now_us();
    for (;;) {
        long http = 0;
        char *body = regtest_get_bytes(health, NULL, &http);
        int ok = body && http == 200;
        free(body);
        if (ok)
            break;
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            mlflow_pid = -1;
            char *log = dbtest_read_file(logpath, NULL);
            fprintf(stderr, "mlflow server exited; its log:\n%s\n", log ? log : "(none)");
            free(log);
            free(dir);
            return fm_fail(FM_EUNAVAILABLE, "mlflow server exited before it was ready");
        }
        if (fm_now_us() - t0 > 120 * 1000000ull) {
            free(dir);
            return fm_fail(FM_EUNAVAILABLE, "mlflow server not ready after 120 s (log: %s)", logpath);
        }
        usleep(200000);
    }
    printf("    mlflow server %s ready in %.1f s (store %s)\n", base, (double)(fm_now_us() - t0) / 1e6, store);
    free(dir);
    mlflow_started = 1;
    snprintf(url, cap, "%s", base);
    return 0;
}
