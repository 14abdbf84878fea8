/* fm_client.h: a blocking fmserve client for tools and tests: one TCP
 * connection, calls that wait for their reply, and raw frame access for tests
 * that send malformed input.
 *
 * Ownership: the client owns its socket and read buffer; messages returned by
 * fm_client_recv / fm_client_call belong to the caller (fm_mp_msg_free).
 * Not thread-safe: one thread per client. */
#ifndef FM_CLIENT_H
#define FM_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "fm_msgpack.h"
#include "fm_proto.h"

typedef struct fm_client fm_client_t;

/* Splits "host:port" (or "[v6]:port", or "host" with default_port). */
int fm_client_parse_address(const char *address, int default_port, char *host, size_t host_cap, int *port);

/* Connects with TCP_NODELAY; `timeout_ms` bounds the connect and, later, each
 * wait for a reply (0 = 30 s). */
int fm_client_connect(const char *host, int port, int timeout_ms, fm_client_t **out);
void fm_client_close(fm_client_t *c);
int fm_client_fd(const fm_client_t *c);
void fm_client_set_timeout(fm_client_t *c, int timeout_ms);

/* Raw access: sends bytes as they are; receives the next whole frame
 * (FM_ENETWORK when the server closed the connection, FM_EDEADLINE on timeout). */
int fm_client_send_raw(fm_client_t *c, const void *data, size_t len);
int fm_client_recv(fm_client_t *c, fm_mp_msg_t **out);

/* A fresh msgid for a request the caller encodes itself. */
uint32_t fm_client_next_msgid(fm_client_t *c);
/* Waits for the response with `msgid`, keeping any other response that
 * arrives first for a later wait. */
int fm_client_wait(fm_client_t *c, uint32_t msgid, fm_mp_msg_t **out);

/* Sends [0, msgid, method, params] where `params` is a packed msgpack array
 * (NULL = []), waits for the reply and splits it. On return 0, *msg holds the
 * frame and *error / *result point into it (*error NULL on success). */
int fm_client_call(fm_client_t *c, const char *method, const fm_mp_buf_t *params, fm_mp_msg_t **msg,
                   const fm_mp_obj_t **error, const fm_mp_obj_t **result);

/* predict: returns 0 with `out` filled (out's arrays provided by the caller
 * for n images), FM_EUNAVAILABLE etc. mapped from a server error (with the
 * error in *err when err is not NULL), or a transport error. */
int fm_client_predict(fm_client_t *c, const uint8_t *pixels, size_t n, const fm_predict_opts_t *opts,
                      fm_predict_result_t *out, fm_proto_error_t *err);

/* auth: presents a token; 0 when accepted. */
int fm_client_auth(fm_client_t *c, const char *token, fm_proto_error_t *err);

/* Maps a protocol error code name back to an FM_E* status. */
int fm_client_status_from_code(const char *code);

#endif /* FM_CLIENT_H */
