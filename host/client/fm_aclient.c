/* fm_aclient.c: the libuv client: one TCP handle, a frame reader, a table of
 * pending msgids, and an output buffer flushed once per loop iteration. */
#include "fm_aclient.h"

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_error.h"
#include "fm_time.h"

#define ACLIENT_MAX_FRAME ((size_t)64 << 20)

typedef struct pending {
    uint32_t msgid;
    int used;
    fm_aclient_reply_cb cb;
    void *user;
    uint64_t t0;
} pending_t;

/* A write request owns the bytes it sends (freed in its callback). */
typedef struct wreq {
    uv_write_t req; /* first member: the callback casts back */
    char *data;
} wreq_t;

struct fm_aclient {
    uv_tcp_t tcp; /* first member */
    uv_prepare_t flush;
    uv_connect_t connect_req;
    uv_loop_t *loop;
    fm_aclient_connect_cb connect_cb;
    void *connect_user;
    fm_mp_reader_t *reader;
    fm_mp_buf_t out;
    pending_t *table;
    uint32_t mask; /* table size - 1 */
    size_t inflight;
    uint32_t next_msgid;
    int connected, broken, closing;
    int open_handles;
    fm_aclient_close_cb close_cb;
    void *close_user;
};

static void fail_all(fm_aclient_t *c, int status) {
    for (uint32_t i = 0; i <= c->mask; i++) {
        pending_t *p = &c->table[i];
        if (!p->used)
            continue;
        p->used = 0;
        c->inflight--;
        p->cb(c, status, NULL, NULL, 0, p->user);
    }
}

static int table_grow(fm_aclient_t *c) {
    uint32_t ncap = (c->mask + 1) * 2;
    pending_t *nt = calloc(ncap, sizeof *nt);
    if (!nt)
        return fm_fail(FM_ENOMEM, "pending table of %u entries", ncap);
    for (uint32_t i = 0; i <= c->mask; i++)
        if (c->table[i].used) {
            pending_t *d = &nt[c->table[i].msgid & (ncap - 1)];
            if (d->used) { /* cannot happen: live msgids are fewer than ncap/2 apart */
                free(nt);
                return fm_fail(FM_EINTERNAL, "pending table collision");
            }
            *d = c->table[i];
        }
    free(c->table);
    c->table = nt;
    c->mask = ncap - 1;
    return 0;
}

static void on_close(uv_handle_t *h) {
    fm_aclient_t *c = h->data;
    if (--c->open_handles > 0)
        return;
    fm_aclient_close_cb cb = c->close_cb;
    void *user = c->close_user;
    fm_mp_reader_free(c->reader);
    fm_mp_buf_free(&c->out);
    free(c->table);
    free(c);
    if (cb)
        cb(user);
}

static void close_handles(fm_aclient_t *c) {
    c->open_handles = 2;
    uv_close((uv_handle_t *)&c->tcp, on_close);
    uv_close((uv_handle_t *)&c->flush, on_close);
}

void fm_aclient_close(fm_aclient_t *c, fm_aclient_close_cb cb, void *user) {
    if (c->closing)
        return;
    c->closing = 1;
    c->close_cb = cb;
    c->close_user = user;
    c->broken = 1;
    fail_all(c, FM_ECANCELED);
    close_handles(c);
}

static void on_write(uv_write_t *req, int status) {
    wreq_t *w = (wreq_t *)req;
    fm_aclient_t *c = req->handle->data;
    free(w->data);
    free(w);
    if (status < 0 && !c->broken) {
        c->broken = 1;
        fail_all(c, fm_fail(FM_ENETWORK, "write: %s", uv_strerror(status)));
    }
}

static void on_flush(uv_prepare_t *h) {
    fm_aclient_t *c = h->data;
    uv_prepare_stop(h);
    if (c->broken || c->out.len == 0)
        return;
    uv_buf_t buf = uv_buf_init(c->out.data, (unsigned)c->out.len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &buf, 1);
    size_t sent = n > 0 ? (size_t)n : 0;
    if (n < 0 && n != UV_EAGAIN) {
        c->broken = 1;
        fail_all(c, fm_fail(FM_ENETWORK, "write: %s", uv_strerror(n)));
        return;
    }
    if (sent == c->out.len) {
        c->out.len = 0;
        return;
    }
    /* The rest goes in a write request that owns the buffer. */
    size_t len;
    char *data = fm_mp_buf_steal(&c->out, &len);
    wreq_t *w = malloc(sizeof *w);
    if (!w) {
        free(data);
        c->broken = 1;
        fail_all(c, fm_fail(FM_ENOMEM, "write request"));
        return;
    }
    memmove(data, data + sent, len - sent);
    w->data = data;
    buf = uv_buf_init(data, (unsigned)(len - sent));
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_write);
    if (rc < 0) {
        free(data);
        free(w);
        c->broken = 1;
        fail_all(c, fm_fail(FM_ENETWORK, "write: %s", uv_strerror(rc)));
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    fm_aclient_t *c = h->data;
    char *p;
    size_t len;
    if (fm_mp_reader_buffer(c->reader, &p, &len) != 0) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    *buf = uv_buf_init(p, (unsigned)(len > UINT32_MAX ? UINT32_MAX : len));
}

static void dispatch(fm_aclient_t *c, fm_mp_msg_t *m) {
    uint64_t id;
    const fm_mp_obj_t *e, *r;
    if (fm_proto_parse_response(m->root, &id, &e, &r) != 0)
        return; /* notifications carry nothing a pipelining client waits for */
    pending_t *p = &c->table[id & c->mask];
    if (!p->used || p->msgid != id)
        return;
    p->used = 0;
    c->inflight--;
    p->cb(c, 0, e, r, fm_now_us() - p->t0, p->user);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    fm_aclient_t *c = s->data;
    if (nread < 0) {
        uv_read_stop(s);
        if (!c->broken) {
            c->broken = 1;
            fail_all(c, fm_fail(FM_ENETWORK, "connection lost: %s", uv_strerror((int)nread)));
        }
        return;
    }
    fm_mp_reader_consumed(c->reader, (size_t)nread);
    for (;;) {
        fm_mp_msg_t *m;
        int rc = fm_mp_reader_next(c->reader, &m);
        if (rc == 0)
            break;
        if (rc < 0) {
            uv_read_stop(s);
            c->broken = 1;
            fail_all(c, rc);
            return;
        }
        dispatch(c, m);
        fm_mp_msg_free(m);
        if (c->closing)
            return;
    }
}

static void on_connect(uv_connect_t *req, int status) {
    fm_aclient_t *c = req->data;
    if (status < 0) {
        int rc = fm_fail(FM_ENETWORK, "connect: %s", uv_strerror(status));
        fm_aclient_connect_cb cb = c->connect_cb;
        void *user = c->connect_user;
        c->closing = 1;
        close_handles(c);
        cb(c, rc, user); /* the client is freed by the close callbacks that follow */
        return;
    }
    c->connected = 1;
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (c->out.len)
        uv_prepare_start(&c->flush, on_flush);
    c->connect_cb(c, 0, c->connect_user);
}

int fm_aclient_connect(uv_loop_t *loop, const char *host, int port, fm_aclient_connect_cb cb, void *user,
                       fm_aclient_t **out) {
    *out = NULL;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int gai = getaddrinfo(host, portstr, &hints, &res);
    if (gai != 0)
        return fm_fail(FM_ENETWORK, "cannot resolve '%s': %s", host, gai_strerror(gai));
    fm_aclient_t *c = calloc(1, sizeof *c);
    fm_mp_limits_t lim = {.max_frame_bytes = ACLIENT_MAX_FRAME, .max_objects = 1u << 22, .max_depth = 16};
    if (!c || !(c->table = calloc(64, sizeof *c->table)) || fm_mp_reader_new(&lim, 256 * 1024, &c->reader) != 0) {
        if (c)
            free(c->table);
        free(c);
        freeaddrinfo(res);
        return fm_fail(FM_ENOMEM, "async client");
    }
    c->mask = 63;
    c->loop = loop;
    c->next_msgid = 1;
    c->connect_cb = cb;
    c->connect_user = user;
    fm_mp_buf_init(&c->out);
    uv_tcp_init(loop, &c->tcp);
    uv_prepare_init(loop, &c->flush);
    c->tcp.data = c;
    c->flush.data = c;
    c->connect_req.data = c;
    int rc = uv_tcp_connect(&c->connect_req, &c->tcp, res->ai_addr, on_connect);
    freeaddrinfo(res);
    if (rc < 0) {
        c->closing = 1;
        close_handles(c);
        return fm_fail(FM_ENETWORK, "connect to %s:%d: %s", host, port, uv_strerror(rc));
    }
    *out = c;
    return 0;
}

size_t fm_aclient_inflight(const fm_aclient_t *c) { return c->inflight; }

static int add_pending(fm_aclient_t *c, uint32_t *msgid, fm_aclient_reply_cb cb, void *user) {
    if (c->broken)
        return fm_fail(FM_ENETWORK, "connection is closed");
    uint32_t id = c->next_msgid++;
    while (c->table[id & c->mask].used) {
        int rc = table_grow(c);
        if (rc)
            return rc;
    }
    pending_t *p = &c->table[id & c->mask];
    p->msgid = id;
    p->used = 1;
    p->cb = cb;
    p->user = user;
    p->t0 = fm_now_us();
    c->inflight++;
    *msgid = id;
    return 0;
}

static int queued(fm_aclient_t *c, uint32_t id) {
    if (c->out.oom) {
        pending_t *p = &c->table[id & c->mask];
        p->used = 0;
        c->inflight--;
        c->broken = 1;
        return fm_fail(FM_ENOMEM, "output buffer");
    }
    if (c->connected)
        uv_prepare_start(&c->flush, on_flush);
    return 0;
}

int fm_aclient_call(fm_aclient_t *c, const char *method, const fm_mp_buf_t *params, fm_aclient_reply_cb cb,
                    void *user) {
    uint32_t id;
    int rc = add_pending(c, &id, cb, user);
    if (rc)
        return rc;
    fm_mp_pack_array(&c->out, 4);
    fm_mp_pack_uint(&c->out, FM_PROTO_REQUEST);
    fm_mp_pack_uint(&c->out, id);
    fm_mp_pack_cstr(&c->out, method);
    if (params && params->len)
        fm_mp_buf_append(&c->out, params->data, params->len);
    else
        fm_mp_pack_array(&c->out, 0);
    return queued(c, id);
}

int fm_aclient_predict(fm_aclient_t *c, const uint8_t *pixels, size_t n, const fm_predict_opts_t *opts,
                       fm_aclient_reply_cb cb, void *user) {
    uint32_t id;
    int rc = add_pending(c, &id, cb, user);
    if (rc)
        return rc;
    fm_proto_pack_predict(&c->out, id, pixels, n, opts);
    return queued(c, id);
}
