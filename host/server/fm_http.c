/* fm_http.c: the health and metrics port. http_parser (nodejs/http-parser)
 * does the parsing; this file routes GET /health, /ready (and the KServe v2
 * paths) and /metrics, and keeps each connection's memory bounded. */
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_log.h"
#include "fm_server_int.h"
#include "fm_time.h"

#define HTTP_MAX_CONNS 128
#define HTTP_MAX_REQUEST_BYTES (64 * 1024) /* without completing a request */

struct http_conn {
    uv_tcp_t tcp; /* first member */
    fm_server_t *srv;
    http_parser parser;
    char url[1024];
    size_t url_len;
    size_t bytes;
    int closing, close_after_write, writes;
    char rbuf[4096];
    http_conn_t *prev, *next;
};

typedef struct http_wreq {
    uv_write_t req; /* first member */
    char *head;
    char *body;
} http_wreq_t;

static void on_close(uv_handle_t *h) {
    http_conn_t *c = h->data;
    free(c);
}

static void http_close(http_conn_t *c) {
    if (c->closing)
        return;
    c->closing = 1;
    fm_server_t *srv = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->http_conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    srv->nhttp--;
    uv_close((uv_handle_t *)&c->tcp, on_close);
}

void fm_http_close_all(fm_server_t *srv) {
    while (srv->http_conns)
        http_close(srv->http_conns);
}

static void on_write(uv_write_t *req, int status) {
    http_wreq_t *w = (http_wreq_t *)req;
    http_conn_t *c = req->handle->data;
    free(w->head);
    free(w->body);
    free(w);
    c->writes--;
    if (status < 0 || (c->close_after_write && c->writes == 0))
        http_close(c);
}

/* Sends status line, headers and body; takes ownership of `body`. */
static void respond(http_conn_t *c, int code, const char *reason, const char *ctype, char *body, size_t blen,
                    int head_only) {
    int keep = !c->close_after_write && http_should_keep_alive(&c->parser);
    char *head = malloc(256);
    http_wreq_t *w = malloc(sizeof *w);
    if (!head || !w) {
        free(head);
        free(w);
        free(body);
        http_close(c);
        return;
    }
    int hl = snprintf(head, 256,
                      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nCache-Control: no-store\r\n"
                      "Connection: %s\r\n\r\n",
                      code, reason, ctype, blen, keep ? "keep-alive" : "close");
    w->head = head;
    w->body = body;
    uv_buf_t bufs[2] = {uv_buf_init(head, (unsigned)hl), uv_buf_init(body, head_only ? 0 : (unsigned)blen)};
    if (!keep)
        c->close_after_write = 1;
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, 2, on_write) < 0) {
        free(head);
        free(body);
        free(w);
        http_close(c);
        return;
    }
    c->writes++;
}

static char *text(const char *s, size_t *len) {
    *len = strlen(s);
    char *p = malloc(*len + 1);
    if (p)
        memcpy(p, s, *len + 1);
    return p;
}

static int path_is(const char *path, size_t len, const char *want) {
    return strlen(want) == len && memcmp(path, want, len) == 0;
}

static int on_message_begin(http_parser *p) {
    http_conn_t *c = p->data;
    c->url_len = 0;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len) {
    http_conn_t *c = p->data;
    if (c->url_len + len >= sizeof c->url)
        return 1; /* an overlong URL is an error, not a truncation */
    memcpy(c->url + c->url_len, at, len);
    c->url_len += len;
    return 0;
}

static int on_message_complete(http_parser *p) {
    http_conn_t *c = p->data;
    fm_server_t *srv = c->srv;
    srv->metrics.http_requests++;
    c->bytes = 0;
    size_t plen = c->url_len;
    const char *q = memchr(c->url, '?', c->url_len);
    if (q)
        plen = (size_t)(q - c->url);
    const char *path = c->url;
    int head_only = p->method == HTTP_HEAD;
    size_t blen;
    char *body;
    if (p->method != HTTP_GET && p->method != HTTP_HEAD) {
        body = text("only GET and HEAD are served here\n", &blen);
        respond(c, 405, "Method Not Allowed", "text/plain; charset=utf-8", body, blen, 0);
    } else if (path_is(path, plen, "/health") || path_is(path, plen, "/healthz") ||
               path_is(path, plen, "/v2/health/live")) {
        body = text("ok\n", &blen);
        respond(c, 200, "OK", "text/plain; charset=utf-8", body, blen, head_only);
    } else if (path_is(path, plen, "/ready") || path_is(path, plen, "/readyz") ||
               path_is(path, plen, "/v2/health/ready")) {
        const char *why = "";
        int ready = fm_server_is_ready(srv, &why);
        char msg[256];
        snprintf(msg, sizeof msg, ready ? "ready\n" : "not ready: %s\n", why);
        body = text(msg, &blen);
        respond(c, ready ? 200 : 503, ready ? "OK" : "Service Unavailable", "text/plain; charset=utf-8", body, blen,
                head_only);
    } else if (path_is(path, plen, "/metrics")) {
        fm_mp_buf_t out;
        fm_mp_buf_init(&out);
        fm_metrics_render(srv, &out);
        if (out.oom) {
            fm_mp_buf_free(&out);
            body = text("out of memory\n", &blen);
            respond(c, 500, "Internal Server Error", "text/plain; charset=utf-8", body, blen, head_only);
        } else {
            body = fm_mp_buf_steal(&out, &blen);
            respond(c, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", body, blen, head_only);
        }
    } else {
        body = text("not found: try /health, /ready or /metrics\n", &blen);
        respond(c, 404, "Not Found", "text/plain; charset=utf-8", body, blen, head_only);
    }
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_message_complete = on_message_complete,
};

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    http_conn_t *c = h->data;
    (void)suggested;
    *buf = uv_buf_init(c->rbuf, sizeof c->rbuf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    http_conn_t *c = s->data;
    if (nread < 0) {
        if (c->writes == 0)
            http_close(c);
        else
            c->close_after_write = 1;
        uv_read_stop(s);
        return;
    }
    if (nread == 0 || c->closing || c->close_after_write)
        return;
    c->bytes += (size_t)nread;
    size_t done = http_parser_execute(&c->parser, &settings, buf->base, (size_t)nread);
    if (c->parser.http_errno != HPE_OK || done != (size_t)nread || c->bytes > HTTP_MAX_REQUEST_BYTES) {
        uv_read_stop(s);
        c->close_after_write = 1;
        size_t blen;
        char *body = text("bad request\n", &blen);
        respond(c, 400, "Bad Request", "text/plain; charset=utf-8", body, blen, 0);
    }
}

void fm_http_on_connection(uv_stream_t *listener, int status) {
    fm_server_t *srv = listener->data;
    if (status < 0)
        return;
    http_conn_t *c = calloc(1, sizeof *c);
    if (!c)
        return;
    c->srv = srv;
    uv_tcp_init(&srv->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0 || srv->nhttp >= HTTP_MAX_CONNS) {
        c->closing = 1;
        uv_close((uv_handle_t *)&c->tcp, on_close);
        return;
    }
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->next = srv->http_conns;
    if (srv->http_conns)
        srv->http_conns->prev = c;
    srv->http_conns = c;
    srv->nhttp++;
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}
