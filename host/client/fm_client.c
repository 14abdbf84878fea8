/* fm_client.c: the blocking client: plain sockets and poll(), the shared
 * msgpack frame reader, and a short list of replies that arrived early. */
#include "fm_client.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fm_error.h"
#include "fm_time.h"

#define CLIENT_MAX_FRAME ((size_t)64 << 20)
#define CLIENT_MAX_EARLY 4096

typedef struct early {
    uint64_t msgid;
    fm_mp_msg_t *msg;
    struct early *next;
} early_t;

struct fm_client {
    int fd;
    int timeout_ms;
    uint32_t next_msgid;
    fm_mp_reader_t *reader;
    early_t *early;
    int nearly;
};

int fm_client_parse_address(const char *address, int default_port, char *host, size_t host_cap, int *port) {
    if (!address || !*address)
        return fm_fail(FM_EINVAL, "empty server address (expected HOST:PORT)");
    const char *colon;
    const char *hstart = address;
    size_t hlen;
    if (address[0] == '[') {
        const char *end = strchr(address, ']');
        if (!end)
            return fm_fail(FM_EINVAL, "address '%s': missing ']'", address);
        hstart = address + 1;
        hlen = (size_t)(end - hstart);
        colon = end[1] == ':' ? end + 1 : NULL;
        if (end[1] && end[1] != ':')
            return fm_fail(FM_EINVAL, "address '%s': junk after ']'", address);
    } else {
        colon = strrchr(address, ':');
        hlen = colon ? (size_t)(colon - address) : strlen(address);
    }
    if (hlen == 0 || hlen + 1 > host_cap)
        return fm_fail(FM_EINVAL, "address '%s': empty or overlong host", address);
    memcpy(host, hstart, hlen);
    host[hlen] = '\0';
    if (!colon) {
        *port = default_port;
        return 0;
    }
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (!colon[1] || *end || p < 1 || p > 65535)
        return fm_fail(FM_EINVAL, "address '%s': port must be 1..65535", address);
    *port = (int)p;
    return 0;
}

static int wait_fd(int fd, short events, int timeout_ms) {
    struct pollfd p = {.fd = fd, .events = events};
    for (;;) {
        int n = poll(&p, 1, timeout_ms);
        if (n > 0)
            return 0;
        if (n == 0)
            return fm_fail(FM_EDEADLINE, "no reply from the server within %d ms", timeout_ms);
        if (errno != EINTR)
            return fm_fail(FM_ENETWORK, "poll: %s", strerror(errno));
    }
}

int fm_client_connect(const char *host, int port, int timeout_ms, fm_client_t **out) {
    *out = NULL;
    if (timeout_ms <= 0)
        timeout_ms = 30000;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int gai = getaddrinfo(host, portstr, &hints, &res);
    if (gai != 0)
        return fm_fail(FM_ENETWORK, "cannot resolve '%s': %s", host, gai_strerror(gai));
    int fd = -1, rc = FM_ENETWORK;
    char why[160] = "no address";
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
        if (fd < 0)
            continue;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            rc = 0;
            break;
        }
        if (errno == EINPROGRESS && wait_fd(fd, POLLOUT, timeout_ms) == 0) {
            int err = 0;
            socklen_t len = sizeof err;
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
            if (err == 0) {
                rc = 0;
                break;
            }
            errno = err;
        }
        snprintf(why, sizeof why, "%s", strerror(errno));
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (rc != 0)
        return fm_fail(FM_ENETWORK, "cannot connect to %s:%d: %s", host, port, why);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fm_client_t *c = calloc(1, sizeof *c);
    fm_mp_limits_t lim = {.max_frame_bytes = CLIENT_MAX_FRAME, .max_objects = 1u << 22, .max_depth = 16};
    if (!c || fm_mp_reader_new(&lim, 256 * 1024, &c->reader) != 0) {
        free(c);
        close(fd);
        return fm_fail(FM_ENOMEM, "client");
    }
    c->fd = fd;
    c->timeout_ms = timeout_ms;
    c->next_msgid = 1;
    *out = c;
    return 0;
}

void fm_client_close(fm_client_t *c) {
    if (!c)
        return;
    while (c->early) {
        early_t *e = c->early;
        c->early = e->next;
        fm_mp_msg_free(e->msg);
        free(e);
    }
    fm_mp_reader_free(c->reader);
    if (c->fd >= 0)
        close(c->fd);
    free(c);
}

int fm_client_fd(const fm_client_t *c) { return c->fd; }
void fm_client_set_timeout(fm_client_t *c, int timeout_ms) { c->timeout_ms = timeout_ms > 0 ? timeout_ms : 30000; }
uint32_t fm_client_next_msgid(fm_client_t *c) { return c->next_msgid++; }

int fm_client_send_raw(fm_client_t *c, const void *data, size_t len) {
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int rc = wait_fd(c->fd, POLLOUT, c->timeout_ms);
            if (rc)
                return rc;
            continue;
        }
        return fm_fail(FM_ENETWORK, "send: %s", n < 0 ? strerror(errno) : "connection closed");
    }
    return 0;
}

int fm_client_recv(fm_client_t *c, fm_mp_msg_t **out) {
    *out = NULL;
    uint64_t deadline = fm_now_us() + (uint64_t)c->timeout_ms * 1000;
    for (;;) {
        int rc = fm_mp_reader_next(c->reader, out);
        if (rc == 1)
            return 0;
        if (rc < 0)
            return rc;
        char *buf;
        size_t cap;
        if ((rc = fm_mp_reader_buffer(c->reader, &buf, &cap)) != 0)
            return rc;
        ssize_t n = recv(c->fd, buf, cap, 0);
        if (n > 0) {
            fm_mp_reader_consumed(c->reader, (size_t)n);
            continue;
        }
        if (n == 0)
            return fm_fail(FM_ENETWORK, "the server closed the connection");
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return fm_fail(FM_ENETWORK, "recv: %s", strerror(errno));
        uint64_t now = fm_now_us();
        if (now >= deadline)
            return fm_fail(FM_EDEADLINE, "no reply from the server within %d ms", c->timeout_ms);
        if ((rc = wait_fd(c->fd, POLLIN, (int)((deadline - now + 999) / 1000))) != 0)
            return rc;
    }
}

static int response_msgid(const fm_mp_msg_t *m, uint64_t *msgid) {
    const fm_mp_obj_t *e, *r;
    return fm_proto_parse_response(m->root, msgid, &e, &r);
}

int fm_client_wait(fm_client_t *c, uint32_t msgid, fm_mp_msg_t **out) {
    for (early_t **pp = &c->early; *pp; pp = &(*pp)->next)
        if ((*pp)->msgid == msgid) {
            early_t *e = *pp;
            *pp = e->next;
            *out = e->msg;
            free(e);
            c->nearly--;
            return 0;
        }
    for (;;) {
        fm_mp_msg_t *m;
        int rc = fm_client_recv(c, &m);
        if (rc)
            return rc;
        uint64_t id;
        if (response_msgid(m, &id) != 0) {
            /* A notification (e.g. the server's error before closing) or a
             * frame that is not a response: report it as the failure. */
            char text[256];
            fm_mp_to_text(m->root, text, sizeof text);
            fm_mp_msg_free(m);
            return fm_fail(FM_EFORMAT, "unexpected frame from the server: %s", text);
        }
        if (id == msgid) {
            *out = m;
            return 0;
        }
        early_t *e = malloc(sizeof *e);
        if (!e || c->nearly >= CLIENT_MAX_EARLY) {
            free(e);
            fm_mp_msg_free(m);
            return fm_fail(FM_ENOMEM, "too many unclaimed replies");
        }
        e->msgid = id;
        e->msg = m;
        e->next = c->early;
        c->early = e;
        c->nearly++;
    }
}

int fm_client_call(fm_client_t *c, const char *method, const fm_mp_buf_t *params, fm_mp_msg_t **msg,
                   const fm_mp_obj_t **error, const fm_mp_obj_t **result) {
    *msg = NULL;
    fm_mp_buf_t b;
    fm_mp_buf_init(&b);
    uint32_t id = fm_client_next_msgid(c);
    fm_mp_pack_array(&b, 4);
    fm_mp_pack_uint(&b, FM_PROTO_REQUEST);
    fm_mp_pack_uint(&b, id);
    fm_mp_pack_cstr(&b, method);
    if (params && params->len)
        fm_mp_buf_append(&b, params->data, params->len);
    else
        fm_mp_pack_array(&b, 0);
    int rc = b.oom ? fm_fail(FM_ENOMEM, "request") : fm_client_send_raw(c, b.data, b.len);
    fm_mp_buf_free(&b);
    if (rc)
        return rc;
    if ((rc = fm_client_wait(c, id, msg)) != 0)
        return rc;
    uint64_t got;
    return fm_proto_parse_response((*msg)->root, &got, error, result);
}

int fm_client_status_from_code(const char *code) {
    static const struct {
        const char *code;
        int status;
    } map[] = {
        {"INVALID_ARGUMENT", FM_EINVAL},   {"NOT_FOUND", FM_ENOTFOUND},
        {"UNAUTHENTICATED", FM_EUNAUTHENTICATED}, {"PERMISSION_DENIED", FM_EUNAUTHENTICATED},
        {"OVERLOADED", FM_EOVERLOADED},    {"DEADLINE_EXCEEDED", FM_EDEADLINE},
        {"UNAVAILABLE", FM_EUNAVAILABLE},  {"PROTOCOL_ERROR", FM_EFORMAT},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(map[i].code, code) == 0)
            return map[i].status;
    return FM_EINTERNAL;
}

static int server_error(const fm_mp_obj_t *e, fm_proto_error_t *err) {
    fm_proto_error_t tmp;
    fm_proto_error_t *pe = err ? err : &tmp;
    fm_proto_read_error(e, pe);
    return fm_fail(fm_client_status_from_code(pe->code), "server: %s: %s", pe->code, pe->message);
}

int fm_client_predict(fm_client_t *c, const uint8_t *pixels, size_t n, const fm_predict_opts_t *opts,
                      fm_predict_result_t *out, fm_proto_error_t *err) {
    fm_mp_buf_t b;
    fm_mp_buf_init(&b);
    uint32_t id = fm_client_next_msgid(c);
    fm_proto_pack_predict(&b, id, pixels, n, opts);
    int rc = b.oom ? fm_fail(FM_ENOMEM, "request of %zu images", n) : fm_client_send_raw(c, b.data, b.len);
    fm_mp_buf_free(&b);
    if (rc)
        return rc;
    fm_mp_msg_t *m;
    if ((rc = fm_client_wait(c, id, &m)) != 0)
        return rc;
    uint64_t got;
    const fm_mp_obj_t *e, *r;
    rc = fm_proto_parse_response(m->root, &got, &e, &r);
    if (rc == 0)
        rc = e ? server_error(e, err) : fm_proto_read_predict(r, n, out);
    fm_mp_msg_free(m);
    return rc;
}

int fm_client_auth(fm_client_t *c, const char *token, fm_proto_error_t *err) {
    fm_mp_buf_t p;
    fm_mp_buf_init(&p);
    fm_mp_pack_array(&p, 1);
    fm_mp_pack_cstr(&p, token);
    fm_mp_msg_t *m;
    const fm_mp_obj_t *e, *r;
    int rc = fm_client_call(c, "auth", &p, &m, &e, &r);
    fm_mp_buf_free(&p);
    if (rc == 0 && e)
        rc = server_error(e, err);
    fm_mp_msg_free(m);
    return rc;
}
