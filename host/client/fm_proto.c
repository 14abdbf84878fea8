/* fm_proto.c: encoders and decoders of the fmserve msgpack-rpc messages. */
#include "fm_proto.h"

#include <stdio.h>
#include <string.h>

#include "fm_error.h"

static const struct {
    const char *name;
    int retryable;
    const char *meaning;
} codes[] = {
#define FM_PROTO_CODE_ROW(name, retry, msg) {#name, retry, msg},
    FM_PROTO_CODES(FM_PROTO_CODE_ROW)
#undef FM_PROTO_CODE_ROW
};

const char *fm_proto_code_name(fm_proto_code_t c) {
    return (unsigned)c < FM_PROTO_NCODES ? codes[c].name : "INTERNAL";
}

int fm_proto_code_retryable(fm_proto_code_t c) { return (unsigned)c < FM_PROTO_NCODES ? codes[c].retryable : 0; }

const char *fm_proto_code_meaning(fm_proto_code_t c) {
    return (unsigned)c < FM_PROTO_NCODES ? codes[c].meaning : "";
}

fm_proto_code_t fm_proto_code_from_status(int status) {
    switch (status) {
    case FM_EINVAL:
    case FM_EFORMAT:
    case FM_ETRUNCATED:
    case FM_ESHAPE: return FM_PROTO_INVALID_ARGUMENT;
    case FM_ENOTFOUND: return FM_PROTO_NOT_FOUND;
    case FM_EOVERLOADED: return FM_PROTO_OVERLOADED;
    case FM_EDEADLINE: return FM_PROTO_DEADLINE_EXCEEDED;
    case FM_EUNAVAILABLE:
    case FM_ECANCELED: return FM_PROTO_UNAVAILABLE;
    case FM_EUNAUTHENTICATED: return FM_PROTO_UNAUTHENTICATED;
    default: return FM_PROTO_INTERNAL;
    }
}

void fm_proto_begin_request(fm_mp_buf_t *b, uint32_t msgid, const char *method, uint32_t nparams) {
    fm_mp_pack_array(b, 4);
    fm_mp_pack_uint(b, FM_PROTO_REQUEST);
    fm_mp_pack_uint(b, msgid);
    fm_mp_pack_cstr(b, method);
    fm_mp_pack_array(b, nparams);
}

void fm_proto_begin_notification(fm_mp_buf_t *b, const char *method, uint32_t nparams) {
    fm_mp_pack_array(b, 3);
    fm_mp_pack_uint(b, FM_PROTO_NOTIFICATION);
    fm_mp_pack_cstr(b, method);
    fm_mp_pack_array(b, nparams);
}

void fm_proto_begin_result(fm_mp_buf_t *b, uint64_t msgid) {
    fm_mp_pack_array(b, 4);
    fm_mp_pack_uint(b, FM_PROTO_RESPONSE);
    fm_mp_pack_uint(b, msgid);
    fm_mp_pack_nil(b);
}

void fm_proto_pack_error(fm_mp_buf_t *b, fm_proto_code_t code, const char *message) {
    fm_mp_pack_map(b, 3);
    fm_mp_pack_key(b, "code");
    fm_mp_pack_cstr(b, fm_proto_code_name(code));
    fm_mp_pack_key(b, "message");
    fm_mp_pack_cstr(b, message ? message : fm_proto_code_meaning(code));
    fm_mp_pack_key(b, "retryable");
    fm_mp_pack_bool(b, fm_proto_code_retryable(code));
}

void fm_proto_pack_error_response(fm_mp_buf_t *b, uint64_t msgid, fm_proto_code_t code, const char *message) {
    fm_mp_pack_array(b, 4);
    fm_mp_pack_uint(b, FM_PROTO_RESPONSE);
    fm_mp_pack_uint(b, msgid);
    fm_proto_pack_error(b, code, message);
    fm_mp_pack_nil(b);
}

void fm_proto_pack_predict(fm_mp_buf_t *b, uint32_t msgid, const uint8_t *pixels, size_t n,
                           const fm_predict_opts_t *opts) {
    static const fm_predict_opts_t none = {0};
    if (!opts)
        opts = &none;
    uint32_t fields = 1 + (opts->version != NULL) + (opts->key != NULL) + (opts->deadline_ms != 0) + (opts->probs != 0);
    fm_proto_begin_request(b, msgid, "predict", 1);
    fm_mp_pack_map(b, fields);
    fm_mp_pack_key(b, "images");
    if (opts->images_as_array) {
        fm_mp_pack_array(b, (uint32_t)n);
        for (size_t i = 0; i < n; i++)
            fm_mp_pack_bin(b, pixels + i * FM_PROTO_IMAGE_BYTES, FM_PROTO_IMAGE_BYTES);
    } else {
        fm_mp_pack_bin(b, pixels, n * FM_PROTO_IMAGE_BYTES);
    }
    if (opts->version) {
        fm_mp_pack_key(b, "version");
        fm_mp_pack_cstr(b, opts->version);
    }
    if (opts->key) {
        fm_mp_pack_key(b, "key");
        fm_mp_pack_cstr(b, opts->key);
    }
    if (opts->deadline_ms) {
        fm_mp_pack_key(b, "deadline_ms");
        fm_mp_pack_uint(b, opts->deadline_ms);
    }
    if (opts->probs) {
        fm_mp_pack_key(b, "probs");
        fm_mp_pack_bool(b, 1);
    }
}

int fm_proto_parse_response(const fm_mp_obj_t *root, uint64_t *msgid, const fm_mp_obj_t **error,
                            const fm_mp_obj_t **result) {
    uint64_t type;
    if (fm_mp_type(root) != FM_MP_ARRAY || fm_mp_len(root) != 4 || fm_mp_get_u64(fm_mp_at(root, 0), &type) != 0 ||
        type != FM_PROTO_RESPONSE || fm_mp_get_u64(fm_mp_at(root, 1), msgid) != 0)
        return fm_fail(FM_EFORMAT, "not a msgpack-rpc response [1, msgid, error, result]");
    const fm_mp_obj_t *e = fm_mp_at(root, 2);
    *error = fm_mp_type(e) == FM_MP_NIL ? NULL : e;
    *result = fm_mp_at(root, 3);
    return 0;
}

void fm_proto_read_error(const fm_mp_obj_t *err, fm_proto_error_t *out) {
    memset(out, 0, sizeof *out);
    if (fm_mp_type(err) == FM_MP_MAP) {
        fm_mp_copy_str(fm_mp_map_get(err, "code"), out->code, sizeof out->code);
        size_t n;
        const char *m = fm_mp_get_str(fm_mp_map_get(err, "message"), &n);
        if (m)
            snprintf(out->message, sizeof out->message, "%.*s", (int)n, m);
        fm_mp_get_bool(fm_mp_map_get(err, "retryable"), &out->retryable);
    }
    if (!out->code[0])
        snprintf(out->code, sizeof out->code, "UNKNOWN");
    if (!out->message[0])
        fm_mp_to_text(err, out->message, sizeof out->message);
}

static int read_str_field(const fm_mp_obj_t *m, const char *key, char *dst, size_t cap) {
    if (fm_mp_copy_str(fm_mp_map_get(m, key), dst, cap) != 0)
        return fm_fail(FM_EFORMAT, "predict result: '%s' missing or not a string", key);
    return 0;
}

int fm_proto_read_predict(const fm_mp_obj_t *r, size_t cap, fm_predict_result_t *out) {
    if (fm_mp_type(r) != FM_MP_MAP)
        return fm_fail(FM_EFORMAT, "predict result is a %s, not a map", fm_mp_type_name(fm_mp_type(r)));
    int rc;
    if ((rc = read_str_field(r, "model", out->model, sizeof out->model)) ||
        (rc = read_str_field(r, "model_version", out->model_version, sizeof out->model_version)) ||
        (rc = read_str_field(r, "request_id", out->request_id, sizeof out->request_id)))
        return rc;
    if (fm_mp_copy_str(fm_mp_map_get(r, "routing"), out->routing, sizeof out->routing) != 0)
        out->routing[0] = '\0';
    if (fm_mp_get_u64(fm_mp_map_get(r, "queue_us"), &out->queue_us) != 0 ||
        fm_mp_get_u64(fm_mp_map_get(r, "compute_us"), &out->compute_us) != 0)
        return fm_fail(FM_EFORMAT, "predict result: queue_us/compute_us missing or not unsigned integers");
    const fm_mp_obj_t *preds = fm_mp_map_get(r, "predictions");
    if (fm_mp_type(preds) != FM_MP_ARRAY)
        return fm_fail(FM_EFORMAT, "predict result: 'predictions' missing or not an array");
    uint32_t n = fm_mp_len(preds);
    if (n > cap)
        return fm_fail(FM_ESHAPE, "predict result has %u predictions, room for %zu", n, cap);
    out->n = n;
    out->have_probs = 0;
    for (uint32_t i = 0; i < n; i++) {
        const fm_mp_obj_t *p = fm_mp_at(preds, i);
        uint64_t label;
        double conf;
        if (fm_mp_get_u64(fm_mp_map_get(p, "label"), &label) != 0 || label > 9 ||
            fm_mp_get_double(fm_mp_map_get(p, "confidence"), &conf) != 0)
            return fm_fail(FM_EFORMAT, "prediction %u: label (0..9) or confidence missing", i);
        if (out->labels)
            out->labels[i] = (int32_t)label;
        if (out->confidence)
            out->confidence[i] = (float)conf;
        const fm_mp_obj_t *probs = fm_mp_map_get(p, "probs");
        if (probs) {
            if (fm_mp_type(probs) != FM_MP_ARRAY || fm_mp_len(probs) != 10)
                return fm_fail(FM_EFORMAT, "prediction %u: probs is not an array of 10 numbers", i);
            out->have_probs = 1;
            for (uint32_t k = 0; k < 10; k++) {
                double v;
                if (fm_mp_get_double(fm_mp_at(probs, k), &v) != 0)
                    return fm_fail(FM_EFORMAT, "prediction %u: probs[%u] is not a number", i, k);
                if (out->probs)
                    out->probs[i * 10 + k] = (float)v;
            }
        }
    }
    return 0;
}
