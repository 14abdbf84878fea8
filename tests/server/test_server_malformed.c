/* test_server_malformed.c: hostile and broken input. Every case in
 * malformed_frames.txt gets exactly the documented reaction (an error reply
 * on a connection that stays usable, or a close); random bytes, mutated
 * frames and clients that vanish mid-frame or mid-request never stop the
 * server from serving everyone else. */
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fm_srv_harness.h"
#include "fm_test.h"
#include "fm_time.h"

static fm_srv_t srv;
static int started;
static const fm_mp_limits_t rlim = {.max_frame_bytes = 1 << 22, .max_objects = 1 << 16, .max_depth = 16};

static int setup(void) {
    if (started)
        return started > 0;
    char *v1 = fm_test_path(fm_srv_models_dir(), "v1"), *v2 = fm_test_path(fm_srv_models_dir(), "v2");
    const char *args[] = {"--stable-model",  v1,      "--canary-model",          v2,
                          "--max-images-per-request", "8", "--max-message-bytes", "65536",
                          "--max-batch-size", "4", "--cpu-workers", "1", NULL};
    started = fm_srv_start(&srv, args, NULL) == 0 ? 1 : -1;
    free(v1);
    free(v2);
    return started > 0;
}

/* Parses the BYTES column: hex pairs, "text", <N*XX>. */
static int parse_bytes(const char *s, uint8_t **out, size_t *len) {
    size_t cap = 1024, n = 0;
    uint8_t *b = malloc(cap);
    while (*s) {
        if (isspace((unsigned char)*s)) {
            s++;
            continue;
        }
        if (n + 70000 > cap) {
            cap = (n + 70000) * 2;
            b = realloc(b, cap);
        }
        if (*s == '"') {
            const char *e = strchr(s + 1, '"');
            if (!e)
                goto bad;
            memcpy(b + n, s + 1, (size_t)(e - s - 1));
            n += (size_t)(e - s - 1);
            s = e + 1;
        } else if (*s == '<') {
            unsigned count, byte;
            if (sscanf(s, "<%u*%x>", &count, &byte) != 2 || count > 65536)
                goto bad;
            if (n + count > cap) {
                cap = (n + count) * 2;
                b = realloc(b, cap);
            }
            memset(b + n, (int)byte, count);
            n += count;
            s = strchr(s, '>');
            if (!s)
                goto bad;
            s++;
        } else {
            unsigned byte;
            if (!isxdigit((unsigned char)s[0]) || !isxdigit((unsigned char)s[1]) || sscanf(s, "%2x", &byte) != 1)
                goto bad;
            b[n++] = (uint8_t)byte;
            s += 2;
        }
    }
    *out = b;
    *len = n;
    return 0;
bad:
    free(b);
    return -1;
}

static int send_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Sends [0, msgid, "health", []] and expects its reply first. */
static int health_ok(int fd, fm_mp_reader_t *r, uint32_t msgid) {
    fm_mp_buf_t b;
    fm_mp_buf_init(&b);
    fm_proto_begin_request(&b, msgid, "health", 0);
    int rc = send_all(fd, b.data, b.len);
    fm_mp_buf_free(&b);
    if (rc)
        return 0;
    fm_mp_msg_t *m;
    if (fm_srv_read_frame(fd, r, 10000, &m) != 1)
        return 0;
    uint64_t id;
    const fm_mp_obj_t *e, *res;
    int ok = fm_proto_parse_response(m->root, &id, &e, &res) == 0 && id == msgid && !e;
    fm_mp_msg_free(m);
    return ok;
}

/* The error code in a response or an "error" notification ("" if none). */
static void frame_code(const fm_mp_msg_t *m, char *code, size_t cap, int *is_result) {
    code[0] = '\0';
    *is_result = 0;
    uint64_t id;
    const fm_mp_obj_t *e, *r;
    if (fm_proto_parse_response(m->root, &id, &e, &r) == 0) {
        if (!e) {
            *is_result = 1;
            return;
        }
        fm_mp_copy_str(fm_mp_map_get(e, "code"), code, cap);
        return;
    }
    const fm_mp_obj_t *root = m->root;
    uint64_t type;
    if (fm_mp_len(root) == 3 && fm_mp_get_u64(fm_mp_at(root, 0), &type) == 0 && type == 2 &&
        fm_mp_str_eq(fm_mp_at(root, 1), "error"))
        fm_mp_copy_str(fm_mp_map_get(fm_mp_at(fm_mp_at(root, 2), 0), "code"), code, cap);
}

static void run_case(const char *name, const char *expect, const uint8_t *bytes, size_t len) {
    int fd = fm_srv_socket(&srv);
    if (fd < 0) {
        FM_TEST_FAIL_AT("%s: cannot connect", name);
        return;
    }
    fm_mp_reader_t *r;
    fm_mp_reader_new(&rlim, 65536, &r);
    char want[64] = "";
    sscanf(expect, "%*s %63s", want);
    int failed = fm_test_failures;
    if (send_all(fd, bytes, len) != 0) {
        FM_TEST_FAIL_AT("%s: send failed", name);
    } else if (strncmp(expect, "eof-close", 9) == 0) {
        shutdown(fd, SHUT_WR);
        fm_mp_msg_t *m;
        int rc = fm_srv_read_frame(fd, r, 10000, &m);
        if (rc == 1)
            fm_mp_msg_free(m);
        if (rc != 0)
            FM_TEST_FAIL_AT("%s: expected the server to close without a reply (got %d)", name, rc);
    } else if (strncmp(expect, "silent", 6) == 0) {
        if (!health_ok(fd, r, 4242))
            FM_TEST_FAIL_AT("%s: expected no reply and a usable connection", name);
    } else if (strncmp(expect, "close", 5) == 0) {
        fm_mp_msg_t *m;
        int rc = fm_srv_read_frame(fd, r, 10000, &m);
        char code[64] = "";
        if (rc == 1) {
            int is_result;
            frame_code(m, code, sizeof code, &is_result);
            fm_mp_msg_free(m);
            rc = fm_srv_read_frame(fd, r, 10000, &m);
            if (rc == 1)
                fm_mp_msg_free(m);
        }
        if (want[0] && strcmp(code, want) != 0)
            FM_TEST_FAIL_AT("%s: expected %s before the close, got '%s'", name, want, code);
        if (rc != 0)
            FM_TEST_FAIL_AT("%s: expected the connection closed (got %d)", name, rc);
    } else { /* error CODE, ok */
        fm_mp_msg_t *m;
        int rc = fm_srv_read_frame(fd, r, 10000, &m);
        if (rc != 1) {
            FM_TEST_FAIL_AT("%s: no reply (%d)", name, rc);
        } else {
            char code[64];
            int is_result;
            frame_code(m, code, sizeof code, &is_result);
            fm_mp_msg_free(m);
            if (strncmp(expect, "ok", 2) == 0 ? !is_result : strcmp(code, want) != 0)
                FM_TEST_FAIL_AT("%s: expected %s, got %s", name, expect, is_result ? "a result" : code);
            else if (!health_ok(fd, r, 4243))
                FM_TEST_FAIL_AT("%s: the connection did not stay usable", name);
        }
    }
    if (fm_test_failures == failed)
        printf("    ok  %-26s %s\n", name, expect);
    fm_mp_reader_free(r);
    close(fd);
}

static int server_serves(void) {
    fm_client_t *c = fm_srv_connect(&srv);
    if (!c)
        return 0;
    uint8_t px[784] = {0};
    int32_t lab;
    float conf;
    fm_predict_result_t res = {.labels = &lab, .confidence = &conf};
    int rc = fm_client_predict(c, px, 1, NULL, &res, NULL);
    fm_client_close(c);
    return rc == 0 && fm_srv_alive(&srv);
}

static void test_frames_file(void) {
    FM_REQUIRE(setup());
    char *path = fm_test_path(FM_SOURCE_DIR, "tests/server/malformed_frames.txt");
    FILE *f = fopen(path, "r");
    free(path);
    FM_REQUIRE(f);
    static char line[65536];
    int cases = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n')
            continue;
        char *bar1 = strchr(line, '|'), *bar2 = bar1 ? strchr(bar1 + 1, '|') : NULL;
        if (!bar2) {
            FM_TEST_FAIL_AT("malformed_frames.txt: bad line: %.60s", line);
            continue;
        }
        *bar1 = *bar2 = '\0';
        char name[64], expect[64];
        sscanf(line, "%63s", name);
        snprintf(expect, sizeof expect, "%s", bar1 + 1);
        char *e = expect;
        while (isspace((unsigned char)*e))
            e++;
        e[strcspn(e, "\n")] = '\0';
        for (char *t = e + strlen(e); t > e && isspace((unsigned char)t[-1]);)
            *--t = '\0';
        uint8_t *bytes;
        size_t len;
        if (parse_bytes(bar2 + 1, &bytes, &len) != 0) {
            FM_TEST_FAIL_AT("malformed_frames.txt: %s: bad BYTES", name);
            continue;
        }
        run_case(name, e, bytes, len);
        free(bytes);
        cases++;
        if (!fm_srv_alive(&srv)) {
            FM_TEST_FAIL_AT("fmserve died after case %s", name);
            break;
        }
    }
    fclose(f);
    FM_CHECK(cases >= 50);
    FM_CHECK(server_serves());
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Drains whatever the server says for a short while, then closes. */
static void drain_and_close(int fd, int ms) {
    char buf[65536];
    uint64_t until = fm_now_us() + (uint64_t)ms * 1000;
    while (fm_now_us() < until) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 5) <= 0)
            continue;
        if (recv(fd, buf, sizeof buf, MSG_DONTWAIT) <= 0)
            break;
    }
    close(fd);
}

static void test_random_bytes(void) {
    FM_REQUIRE(setup());
    for (int i = 0; i < 300; i++) {
        int fd = fm_srv_socket(&srv);
        FM_REQUIRE(fd >= 0);
        size_t n = 1 + rnd() % 3000;
        uint8_t *b = malloc(n);
        for (size_t k = 0; k < n; k++)
            b[k] = (uint8_t)rnd();
        send(fd, b, n, MSG_NOSIGNAL);
        free(b);
        drain_and_close(fd, i % 10 == 0 ? 50 : 1);
    }
    FM_CHECK(server_serves());
}

static void test_mutated_frames(void) {
    FM_REQUIRE(setup());
    uint8_t px[3 * 784];
    for (size_t i = 0; i < sizeof px; i++)
        px[i] = (uint8_t)i;
    int replies = 0, closes = 0;
    for (int i = 0; i < 300; i++) {
        fm_mp_buf_t b;
        fm_mp_buf_init(&b);
        fm_predict_opts_t o = {.version = (i & 1) ? "canary" : NULL, .key = (i & 2) ? "k" : NULL, .probs = i & 4,
                               .images_as_array = (i >> 3) & 1};
        fm_proto_pack_predict(&b, (uint32_t)i, px, 3, &o);
        /* Flip 1-4 bytes, mostly in the header area where types live. */
        int flips = 1 + (int)(rnd() % 4);
        for (int k = 0; k < flips; k++) {
            size_t at = rnd() % 3 ? rnd() % (b.len < 64 ? b.len : 64) : rnd() % b.len;
            b.data[at] = (char)rnd();
        }
        int fd = fm_srv_socket(&srv);
        FM_REQUIRE(fd >= 0);
        send(fd, b.data, b.len, MSG_NOSIGNAL);
        shutdown(fd, SHUT_WR); /* a frame cut short by mutation must not hang */
        fm_mp_buf_free(&b);
        fm_mp_reader_t *r;
        fm_mp_reader_new(&rlim, 65536, &r);
        fm_mp_msg_t *m;
        int rc;
        while ((rc = fm_srv_read_frame(fd, r, 10000, &m)) == 1) {
            replies++;
            fm_mp_msg_free(m);
        }
        if (rc == 0)
            closes++;
        else
            FM_TEST_FAIL_AT("mutated frame %d: the server neither answered and closed nor closed within 10 s", i);
        fm_mp_reader_free(r);
        close(fd);
    }
    printf("    300 mutated frames: %d replies, %d connections closed by the server\n", replies, closes);
    FM_CHECK_EQ(closes, 300);
    FM_CHECK(server_serves());
}

static void test_disconnects(void) {
    FM_REQUIRE(setup());
    uint8_t px[8 * 784];
    memset(px, 9, sizeof px);
    fm_mp_buf_t b;
    fm_mp_buf_init(&b);
    fm_predict_opts_t o = {.version = "canary"}; /* the slower model: requests are still queued */
    for (int i = 0; i < 40; i++)
        fm_proto_pack_predict(&b, (uint32_t)i, px, 8, &o);
    for (int i = 0; i < 60; i++) {
        int fd = fm_srv_socket(&srv);
        FM_REQUIRE(fd >= 0);
        /* Cut anywhere: inside a header, inside image bytes, between frames,
         * or after everything was sent but before any reply. */
        size_t cut = i % 4 == 3 ? b.len : rnd() % b.len;
        send(fd, b.data, cut, MSG_NOSIGNAL);
        if (i % 2) {
            struct linger lg = {.l_onoff = 1, .l_linger = 0}; /* RST instead of FIN */
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        }
        close(fd);
    }
    fm_mp_buf_free(&b);
    FM_CHECK(server_serves());
    /* Abandoned requests are cancelled or computed; soon none is left open.
     * (Requests sent in full before a FIN are still computed: the client may
     * only have closed its sending side.) */
    fm_client_t *c = fm_srv_connect(&srv);
    FM_REQUIRE(c);
    uint64_t live = 99, conns = 99;
    for (int i = 0; i < 600 && (live != 0 || conns != 1); i++) {
        fm_mp_msg_t *m;
        const fm_mp_obj_t *e, *r;
        FM_REQUIRE_OK(fm_srv_call0(c, "stats", &m, &e, &r));
        fm_mp_get_u64(fm_mp_map_get(r, "live_requests"), &live);
        fm_mp_get_u64(fm_mp_map_get(r, "connections"), &conns);
        fm_mp_msg_free(m);
        if (live != 0 || conns != 1)
            usleep(50000);
    }
    FM_CHECK_EQ(live, 0);
    FM_CHECK_EQ(conns, 1);
    fm_client_close(c);
}

static void test_shutdown(void) {
    if (started <= 0)
        FM_TEST_SKIP("server not started");
    char *body;
    FM_CHECK_EQ(fm_srv_http_get(srv.http_port, "/metrics", &body), 200);
    FM_CHECK(fm_srv_metric(body, "fm_rpc_protocol_errors ") >= 15);
    free(body);
    FM_CHECK_EQ(fm_srv_stop(&srv, SIGTERM, 30000), 0);
    started = 0;
}

FM_TEST_MAIN({"frames_file", test_frames_file}, {"random_bytes", test_random_bytes},
             {"mutated_frames", test_mutated_frames}, {"disconnects", test_disconnects},
             {"shutdown", test_shutdown})
