/* fm_aclient.h: an asynchronous fmserve client on a libuv loop, with
 * pipelining: many requests in flight on one connection, replies matched by
 * msgid in whatever order they come. Used by `fmctl predict --stream`, the
 * server benchmark and the tests.
 *
 * Ownership: the client is allocated by fm_aclient_connect and freed after
 * fm_aclient_close's callback (or right after the connect callback reports a
 * failure, which also frees it). Requests are encoded into the client's own
 * buffer at call time, so the caller's pixels may be reused at once. Reply
 * views passed to a callback are valid only during the call. Everything runs
 * on the loop's thread. */
#ifndef FM_ACLIENT_H
#define FM_ACLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "fm_msgpack.h"
#include "fm_proto.h"

typedef struct fm_aclient fm_aclient_t;

/* status 0 = connected; otherwise the client is already freed. */
typedef void (*fm_aclient_connect_cb)(fm_aclient_t *c, int status, void *user);
/* status 0: a reply arrived; *error is NULL on success and `result` holds the
 * result. status < 0: no reply (connection lost, client closed); both NULL.
 * latency_us runs from the call to the reply's arrival. */
typedef void (*fm_aclient_reply_cb)(fm_aclient_t *c, int status, const fm_mp_obj_t *error,
                                    const fm_mp_obj_t *result, uint64_t latency_us, void *user);
typedef void (*fm_aclient_close_cb)(void *user);

/* Resolves `host` (blocking getaddrinfo; tools connect once) and connects. */
int fm_aclient_connect(uv_loop_t *loop, const char *host, int port, fm_aclient_connect_cb cb, void *user,
                       fm_aclient_t **out);
/* Queues [0, msgid, method, params] (`params` a packed array, NULL = []).
 * Bytes go out in one write per loop iteration. */
int fm_aclient_call(fm_aclient_t *c, const char *method, const fm_mp_buf_t *params, fm_aclient_reply_cb cb,
                    void *user);
int fm_aclient_predict(fm_aclient_t *c, const uint8_t *pixels, size_t n, const fm_predict_opts_t *opts,
                       fm_aclient_reply_cb cb, void *user);
/* Requests sent and not yet answered. */
size_t fm_aclient_inflight(const fm_aclient_t *c);
/* Fails every pending request with FM_ECANCELED, closes the socket, and
 * calls `cb` once the handles are closed and the client is freed. */
void fm_aclient_close(fm_aclient_t *c, fm_aclient_close_cb cb, void *user);

#endif /* FM_ACLIENT_H */
