/* fm_proto.h: the fmserve MessagePack-RPC protocol shared by the server and
 * the clients: message types, error codes, and the encoders and decoders of
 * requests and responses. docs/protocol.md is the specification; this file
 * is its C form.
 *
 * Messages follow the msgpack-rpc spec: request [0, msgid, method, params],
 * response [1, msgid, error, result], notification [2, method, params]. */
#ifndef FM_PROTO_H
#define FM_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "fm_msgpack.h"

#define FM_PROTO_REQUEST 0
#define FM_PROTO_RESPONSE 1
#define FM_PROTO_NOTIFICATION 2

#define FM_PROTO_DEFAULT_PORT 7070
#define FM_PROTO_IMAGE_BYTES 784

/* X(name, retryable, meaning). Error replies are maps
 * {"code": name, "message": text, "retryable": bool}. */
#define FM_PROTO_CODES(X)                                                                              \
    X(INVALID_ARGUMENT, 0, "the request is malformed or a value is out of range")                      \
    X(NOT_FOUND, 0, "unknown method, or the requested model version is not loaded")                    \
    X(UNAUTHENTICATED, 0, "the connection has not authenticated (call auth first) or the token is wrong") \
    X(PERMISSION_DENIED, 0, "the method needs the admin token")                                         \
    X(OVERLOADED, 1, "a queue, connection or in-flight limit is full; retry later, ideally elsewhere")  \
    X(DEADLINE_EXCEEDED, 1, "the request's deadline passed before it was computed")                    \
    X(UNAVAILABLE, 1, "the server is draining or the model is not ready; retry on another replica")    \
    X(PROTOCOL_ERROR, 0, "the frame is not a msgpack-rpc message or breaks a size limit; the connection is closed") \
    X(INTERNAL, 0, "a server fault (compute backend failure); the detail is logged")

typedef enum {
#define FM_PROTO_CODE_ENUM(name, retry, msg) FM_PROTO_##name,
    FM_PROTO_CODES(FM_PROTO_CODE_ENUM)
#undef FM_PROTO_CODE_ENUM
        FM_PROTO_NCODES
} fm_proto_code_t;

const char *fm_proto_code_name(fm_proto_code_t c);
int fm_proto_code_retryable(fm_proto_code_t c);
const char *fm_proto_code_meaning(fm_proto_code_t c);
/* FM_E* status -> protocol code (FM_EOVERLOADED -> OVERLOADED, ...). */
fm_proto_code_t fm_proto_code_from_status(int status);

/* ---- Encoding ---------------------------------------------------------- */

/* [0, msgid, method, <array header of nparams>]; the caller packs the params. */
void fm_proto_begin_request(fm_mp_buf_t *b, uint32_t msgid, const char *method, uint32_t nparams);
/* [2, method, <array header of nparams>]. */
void fm_proto_begin_notification(fm_mp_buf_t *b, const char *method, uint32_t nparams);
/* [1, msgid, nil, ...]; the caller packs the result value next. */
void fm_proto_begin_result(fm_mp_buf_t *b, uint64_t msgid);
/* A whole error response [1, msgid, {code, message, retryable}, nil]. */
void fm_proto_pack_error_response(fm_mp_buf_t *b, uint64_t msgid, fm_proto_code_t code, const char *message);
/* The error map alone. */
void fm_proto_pack_error(fm_mp_buf_t *b, fm_proto_code_t code, const char *message);

typedef struct fm_predict_opts {
    const char *version; /* NULL, "stable", "canary" or a version id such as "v2" */
    const char *key;     /* NULL or a sticky routing key */
    uint32_t deadline_ms; /* 0 = none */
    int probs;           /* ask for the 10 probabilities per image */
    int images_as_array; /* send an array of 784-byte bins instead of one bin */
} fm_predict_opts_t;

/* A whole predict request for `n` images of 784 bytes. */
void fm_proto_pack_predict(fm_mp_buf_t *b, uint32_t msgid, const uint8_t *pixels, size_t n,
                           const fm_predict_opts_t *opts);

/* ---- Decoding ---------------------------------------------------------- */

/* Splits a response frame. Returns 0, or FM_EFORMAT when `root` is not
 * [1, msgid, error, result]. *error is NULL when the error slot is nil. */
int fm_proto_parse_response(const fm_mp_obj_t *root, uint64_t *msgid, const fm_mp_obj_t **error,
                            const fm_mp_obj_t **result);

typedef struct fm_proto_error {
    char code[32];
    char message[256];
    int retryable;
} fm_proto_error_t;

/* Reads an error value (the protocol's map, or any other value rendered as
 * text for foreign servers). */
void fm_proto_read_error(const fm_mp_obj_t *err, fm_proto_error_t *out);

typedef struct fm_predict_result {
    char model[16];          /* "stable" / "canary" */
    char model_version[64];  /* e.g. "v1" */
    char routing[16];        /* "ab", "sticky", "pinned" */
    char request_id[40];     /* UUIDv7 text */
    uint64_t queue_us;
    uint64_t compute_us;
    size_t n;                /* images in the reply */
    int32_t *labels;         /* caller's arrays, `cap` entries */
    float *confidence;
    float *probs;            /* cap * 10, or NULL when not wanted */
    int have_probs;
} fm_predict_result_t;

/* Reads a predict result into the caller's arrays (out->labels etc. set,
 * holding `cap` images). FM_EFORMAT with a detail when a field is missing or
 * mistyped, FM_ESHAPE when more than `cap` images came back. */
int fm_proto_read_predict(const fm_mp_obj_t *result, size_t cap, fm_predict_result_t *out);

#endif /* FM_PROTO_H */
