/* fm_srv_harness.c: real fmserve processes and the helpers around them. */
#include "fm_srv_harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fm_backend.h"
#include "fm_error.h"
#include "fm_model.h"
#include "fm_ref_forward.h"
#include "fm_test.h"
#include "fm_time.h"

extern char **environ;

int fm_srv_write_model(const char *dir, int cnn, uint64_t seed, const char *version) {
    fm_model_t *m = fm_model_new(cnn ? FM_ARCH_CNN : FM_ARCH_MLP);
    if (!m)
        return FM_ENOMEM;
    /* A scale above 1 makes the random logits spread, so the labels are not
     * all one class and a wrong answer shows. */
    fm_ref_random_init(m, seed, 2.5);
    fm_model_set_identity(m, cnn ? "fashion-mnist-cnn" : "fashion-mnist-mlp", version);
    int rc = fm_model_save(m, dir);
    fm_model_free(m);
    return rc;
}

const char *fm_srv_models_dir(void) {
    static char *dir;
    if (dir)
        return dir;
    dir = fm_test_path(fm_test_tmpdir(), "models");
    mkdir(dir, 0755);
    char *v1 = fm_test_path(dir, "v1"), *v2 = fm_test_path(dir, "v2");
    if (fm_srv_write_model(v1, 0, 1, "v1") != 0 || fm_srv_write_model(v2, 1, 2, "v2") != 0) {
        fprintf(stderr, "cannot write test models: %s\n", fm_last_error());
        exit(1);
    }
    free(v1);
    free(v2);
    return dir;
}

static int read_ports(const char *path, int *rpc, int *http) {
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int n = fscanf(f, "%d %d", rpc, http);
    fclose(f);
    return n == 2 ? 0 : -1;
}

int fm_srv_start(fm_srv_t *s, const char *const *args, const char *const *env) {
    static int counter;
    memset(s, 0, sizeof *s);
    counter++;
    snprintf(s->log_path, sizeof s->log_path, "%s/fmserve-%d-%d.log", fm_test_tmpdir(), (int)getpid(), counter);
    snprintf(s->ports_path, sizeof s->ports_path, "%s/fmserve-%d-%d.ports", fm_test_tmpdir(), (int)getpid(),
             counter);
    unlink(s->ports_path);
    fflush(NULL); /* a child must not inherit and re-print buffered output */
    pid_t pid = fork();
    if (pid < 0)
        return fm_fail(FM_EIO, "fork: %s", strerror(errno));
    if (pid == 0) {
        int fd = open(s->log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
            close(fd);
        }
        /* A clean environment for the options, then the test's own. */
        for (;;) {
            int removed = 0;
            for (char **e = environ; *e; e++)
                if (strncmp(*e, "FM_", 3) == 0 || strncmp(*e, "AB_TEST_RATIO=", 14) == 0) {
                    char name[256];
                    size_t n = strcspn(*e, "=");
                    if (n >= sizeof name)
                        continue;
                    memcpy(name, *e, n);
                    name[n] = '\0';
                    unsetenv(name);
                    removed = 1;
                    break;
                }
            if (!removed)
                break;
        }
        if (!getenv("FM_LOG_LEVEL"))
            setenv("FM_LOG_LEVEL", "info", 1);
        for (int i = 0; env && env[i]; i++)
            putenv((char *)env[i]);
        const char *argv[96];
        int a = 0;
        argv[a++] = FMSERVE_BIN;
        argv[a++] = "--listen";
        argv[a++] = "127.0.0.1";
        argv[a++] = "--port";
        argv[a++] = "0";
        argv[a++] = "--http-port";
        argv[a++] = "0";
        argv[a++] = "--ports-file";
        argv[a++] = s->ports_path;
        for (int i = 0; args && args[i] && a < 94; i++)
            argv[a++] = args[i];
        argv[a] = NULL;
        execv(FMSERVE_BIN, (char *const *)argv);
        fprintf(stderr, "exec %s: %s\n", FMSERVE_BIN, strerror(errno));
        _exit(127);
    }
    s->pid = pid;
    uint64_t until = fm_now_us() + 60 * 1000000ull;
    while (fm_now_us() < until) {
        if (read_ports(s->ports_path, &s->rpc_port, &s->http_port) == 0)
            return 0;
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            s->pid = 0;
            fm_srv_dump_log(s);
            return fm_fail(FM_EUNAVAILABLE, "fmserve exited during start-up (status %d)",
                           WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
        }
        usleep(20000);
    }
    fm_srv_stop(s, SIGKILL, 5000);
    fm_srv_dump_log(s);
    return fm_fail(FM_EUNAVAILABLE, "fmserve did not become ready within 60 s");
}

int fm_srv_stop(fm_srv_t *s, int sig, int timeout_ms) {
    if (s->pid <= 0)
        return -1;
    if (sig)
        kill(s->pid, sig);
    uint64_t until = fm_now_us() + (uint64_t)timeout_ms * 1000;
    for (;;) {
        int status;
        pid_t r = waitpid(s->pid, &status, WNOHANG);
        if (r == s->pid) {
            s->pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        if (fm_now_us() >= until) {
            kill(s->pid, SIGKILL);
            waitpid(s->pid, &status, 0);
            s->pid = 0;
            return -1;
        }
        usleep(5000);
    }
}

int fm_srv_alive(const fm_srv_t *s) { return s->pid > 0 && kill(s->pid, 0) == 0; }

void fm_srv_dump_log(const fm_srv_t *s) {
    FILE *f = fopen(s->log_path, "r");
    if (!f)
        return;
    fprintf(stderr, "---- fmserve log (%s) ----\n", s->log_path);
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof line, f) && n++ < 200)
        fputs(line, stderr);
    fclose(f);
    fprintf(stderr, "---- end of log ----\n");
}

int fm_srv_log_contains(const fm_srv_t *s, const char *needle) {
    FILE *f = fopen(s->log_path, "r");
    if (!f)
        return 0;
    char line[2048];
    int found = 0;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

fm_client_t *fm_srv_connect(const fm_srv_t *s) {
    fm_client_t *c = NULL;
    if (fm_client_connect("127.0.0.1", s->rpc_port, 30000, &c) != 0) {
        fprintf(stderr, "  connect to fmserve on port %d: %s\n", s->rpc_port, fm_last_error());
        return NULL;
    }
    return c;
}

int fm_srv_socket(const fm_srv_t *s) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->rpc_port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

int fm_srv_read_frame(int fd, fm_mp_reader_t *r, int timeout_ms, fm_mp_msg_t **out) {
    *out = NULL;
    uint64_t until = fm_now_us() + (uint64_t)timeout_ms * 1000;
    for (;;) {
        int rc = fm_mp_reader_next(r, out);
        if (rc == 1)
            return 1;
        if (rc < 0)
            return -1;
        uint64_t now = fm_now_us();
        if (now >= until)
            return -1;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, (int)((until - now) / 1000) + 1) <= 0)
            continue;
        char *buf;
        size_t cap;
        if (fm_mp_reader_buffer(r, &buf, &cap) != 0)
            return -1;
        ssize_t n = recv(fd, buf, cap, 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return 0;
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return -1;
        }
        fm_mp_reader_consumed(r, (size_t)n);
    }
}

int fm_srv_http_get(int port, const char *path, char **body) {
    char req[512];
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", path);
    return fm_srv_http_raw(port, req, body);
}

int fm_srv_http_raw(int port, const char *request, char **body) {
    *body = NULL;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    size_t n = strlen(request);
    if (write(fd, request, n) != (ssize_t)n) {
        close(fd);
        return -1;
    }
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 4096 > cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 10000) <= 0)
            break;
        ssize_t r = read(fd, buf + len, cap - len - 1);
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    int code = -1;
    if (sscanf(buf, "HTTP/1.1 %d", &code) != 1) {
        free(buf);
        return -1;
    }
    char *b = strstr(buf, "\r\n\r\n");
    *body = strdup(b ? b + 4 : "");
    free(buf);
    return code;
}

int fm_srv_fixture(fm_dataset_t *ds) {
    char *dir = fm_test_path(fm_test_fixtures_dir(), "fashion-mnist");
    int rc = fm_dataset_load(dir, "t10k", ds);
    free(dir);
    return rc;
}

int fm_srv_offline(const char *model_dir, const uint8_t *pixels, size_t n, int32_t *labels, float *confidence) {
    fm_model_t *m = NULL;
    int rc = fm_model_load(model_dir, &m);
    if (rc)
        return rc;
    fm_backend_config_t cfg;
    fm_backend_config_default(&cfg);
    cfg.threads = 1;
    fm_engine_t e;
    if ((rc = fm_engine_open("cpu", &cfg, &e)) != 0) {
        fm_model_free(m);
        return rc;
    }
    fm_backend_model_t *bm = NULL;
    float *probs = malloc(n * 10 * sizeof *probs);
    float *conf = confidence ? confidence : malloc(n * sizeof *conf);
    if ((rc = fm_engine_prepare(&e, m, &bm)) == 0) {
        fm_batch_t b = {.pixels = pixels, .n = n, .probs = probs, .labels = labels, .confidence = conf};
        rc = fm_engine_infer(&e, bm, &b);
        fm_engine_release(&e, bm);
    }
    if (!confidence)
        free(conf);
    free(probs);
    fm_engine_close(&e);
    fm_model_free(m);
    return rc;
}

int fm_srv_call0(fm_client_t *c, const char *method, fm_mp_msg_t **msg, const fm_mp_obj_t **error,
                 const fm_mp_obj_t **result) {
    return fm_client_call(c, method, NULL, msg, error, result);
}

double fm_srv_metric(const char *text, const char *prefix) {
    double sum = 0;
    int found = 0;
    size_t pl = strlen(prefix);
    for (const char *line = text; line && *line;) {
        const char *nl = strchr(line, '\n');
        if (strncmp(line, prefix, pl) == 0) {
            const char *end = nl ? nl : line + strlen(line), *sp = NULL;
            for (const char *q = line; q < end; q++)
                if (*q == ' ')
                    sp = q;
            if (sp) {
                sum += strtod(sp + 1, NULL);
                found = 1;
            }
        }
        line = nl ? nl + 1 : NULL;
    }
    return found ? sum : -1;
}

const char *fm_srv_python(void) {
    const char *py = getenv("FM_TEST_PYTHON");
    if (!py || access(py, X_OK) != 0)
        return NULL;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' -c 'import msgpack' >/dev/null 2>&1", py);
    return system(cmd) == 0 ? py : NULL;
}
