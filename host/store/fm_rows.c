/* fm_rows.c: COPY text rows for the prediction log (see fm_rows.h). */
#include "fm_rows.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "fm_error.h"

const char *fm_model_role_name(fm_model_role_t r) { return r == FM_ROLE_CANARY ? "canary" : "stable"; }

const char *fm_rows_route_name(fm_route_t r) {
    switch (r) {
    case FM_ROUTE_PINNED:
        return "pinned";
    case FM_ROUTE_STICKY:
        return "sticky";
    default:
        return "ab";
    }
}

int fm_rows_timestamp(char *buf, size_t cap, int64_t ts_us) {
    int64_t sec = ts_us / 1000000, us = ts_us % 1000000;
    if (us < 0) {
        us += 1000000;
        sec--;
    }
    time_t t = (time_t)sec;
    struct tm tm;
    gmtime_r(&t, &tm);
    /* Formatted into a buffer wide enough for any int, so that the compiler
     * can see nothing is cut; real dates take 32 bytes. */
    char tmp[128];
    snprintf(tmp, sizeof tmp, "%04d-%02d-%02d %02d:%02d:%02d.%06d+00", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec, (int)us);
    return snprintf(buf, cap, "%s", tmp);
}

/* A small append-only writer over the caller's buffer. */
typedef struct out {
    char *p;
    size_t cap, len;
    int overflow;
} out_t;

static void put(out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(out_t *o, const char *fmt, ...) {
    if (o->overflow)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= o->cap - o->len)
        o->overflow = 1;
    else
        o->len += (size_t)n;
}

/* COPY text escaping: backslash, tab, newline and carriage return would
 * otherwise end or split the field. */
static int put_text(out_t *o, const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 127)
        return -1;
    for (; *s; s++) {
        switch (*s) {
        case '\\':
            put(o, "\\\\");
            break;
        case '\t':
            put(o, "\\t");
            break;
        case '\n':
            put(o, "\\n");
            break;
        case '\r':
            put(o, "\\r");
            break;
        default:
            put(o, "%c", *s);
        }
    }
    return 0;
}

static int finish(out_t *o, const char *what) {
    if (o->overflow)
        return fm_fail(FM_ETRUNCATED, "%s row does not fit in %zu bytes", what, o->cap);
    return (int)o->len;
}

static int check_prediction(const fm_prediction_row_t *r) {
    if (r->image_index < 0 || r->image_index > 32767)
        return fm_fail(FM_EINVAL, "prediction row: image_index %d out of range", r->image_index);
    if (r->label < 0 || r->label > 9)
        return fm_fail(FM_EINVAL, "prediction row: label %d is not 0..9", r->label);
    if (!isfinite(r->confidence) || r->confidence < 0 || r->confidence > 1)
        return fm_fail(FM_EINVAL, "prediction row: confidence %g is not in [0, 1]", (double)r->confidence);
    for (int i = 0; i < 10; i++)
        if (!isfinite(r->probs[i]))
            return fm_fail(FM_EINVAL, "prediction row: probs[%d] is not finite", i);
    if (r->queue_us < 0 || r->compute_us < 0 || r->total_us < 0 || r->queue_us > INT32_MAX ||
        r->compute_us > INT32_MAX || r->total_us > INT32_MAX)
        return fm_fail(FM_EINVAL, "prediction row: a latency is negative or above %d µs", INT32_MAX);
    if (!r->model_version || !*r->model_version || strlen(r->model_version) > 127)
        return fm_fail(FM_EINVAL, "prediction row: model version missing or longer than 127 bytes");
    return 0;
}

int fm_rows_prediction(char *buf, size_t cap, const fm_prediction_row_t *r) {
    int rc = check_prediction(r);
    if (rc)
        return rc;
    out_t o = {buf, cap, 0, 0};
    char ts[40];
    fm_rows_timestamp(ts, sizeof ts, r->ts_us);
    char id[FM_UUID_TEXT_LEN + 1];
    fm_uuid_format(r->request_id, id);
    put(&o, "%s\t%d\t%s\t%s\t", id, r->image_index, ts, fm_model_role_name(r->role));
    if (!r->model_version || put_text(&o, r->model_version) != 0)
        return fm_fail(FM_EINVAL, "prediction row: model version missing or longer than 127 bytes");
    /* %.9g round-trips every float32 exactly. */
    put(&o, "\t%s\t%d\t%.9g\t{", fm_rows_route_name(r->route), r->label, (double)r->confidence);
    for (int i = 0; i < 10; i++)
        put(&o, i ? ",%.9g" : "%.9g", (double)r->probs[i]);
    put(&o, "}\t%lld\t%lld\t%lld\n", (long long)r->queue_us, (long long)r->compute_us, (long long)r->total_us);
    return finish(&o, "prediction");
}

static int check_sampled(int image_index, const char *model_version, const double *features) {
    if (image_index < 0 || image_index > 32767)
        return fm_fail(FM_EINVAL, "sampled row: image_index %d out of range", image_index);
    for (int i = 0; i < FM_PIXEL_FEATURES; i++)
        if (!isfinite(features[i]))
            return fm_fail(FM_EINVAL, "sampled row: feature %s is not finite", fm_pixel_feature_names[i]);
    if (!model_version || !*model_version || strlen(model_version) > 127)
        return fm_fail(FM_EINVAL, "sampled row: model version missing or longer than 127 bytes");
    return 0;
}

int fm_rows_sampled(char *buf, size_t cap, const uint8_t request_id[FM_UUID_BYTES], int image_index, int64_t ts_us,
                    const char *model_version, const uint8_t *image, const double features[FM_PIXEL_FEATURES]) {
    static const char hex[] = "0123456789abcdef";
    int rc = check_sampled(image_index, model_version, features);
    if (rc)
        return rc;
    out_t o = {buf, cap, 0, 0};
    char ts[40];
    fm_rows_timestamp(ts, sizeof ts, ts_us);
    char id[FM_UUID_TEXT_LEN + 1];
    fm_uuid_format(request_id, id);
    put(&o, "%s\t%d\t%s\t", id, image_index, ts);
    if (!model_version || put_text(&o, model_version) != 0)
        return fm_fail(FM_EINVAL, "sampled row: model version missing or longer than 127 bytes");
    /* bytea in hex form; the backslash of \x is itself escaped for COPY. */
    put(&o, "\t\\\\x");
    if (!o.overflow && o.cap - o.len > 2 * FM_PIXEL_COUNT) {
        for (int i = 0; i < FM_PIXEL_COUNT; i++) {
            o.p[o.len++] = hex[image[i] >> 4];
            o.p[o.len++] = hex[image[i] & 15];
        }
    } else {
        o.overflow = 1;
    }
    /* %.17g round-trips every double exactly. */
    for (int i = 0; i < FM_PIXEL_FEATURES; i++)
        put(&o, "\t%.17g", features[i]);
    put(&o, "\n");
    return finish(&o, "sampled input");
}

/* ---- binary COPY ---- */

/* PostgreSQL's epoch for timestamps: 2000-01-01 00:00:00 UTC, in µs after
 * the Unix epoch. */
#define PG_EPOCH_US 946684800000000LL
#define FLOAT4_OID 700

typedef struct bout {
    uint8_t *p;
    size_t cap, len;
    int overflow;
} bout_t;

static void b_bytes(bout_t *o, const void *d, size_t n) {
    if (o->overflow || o->cap - o->len < n) {
        o->overflow = 1;
        return;
    }
    memcpy(o->p + o->len, d, n);
    o->len += n;
}

static void b_u16(bout_t *o, uint16_t v) {
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    b_bytes(o, b, 2);
}

static void b_u32(bout_t *o, uint32_t v) {
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    b_bytes(o, b, 4);
}

static void b_u64(bout_t *o, uint64_t v) {
    b_u32(o, (uint32_t)(v >> 32));
    b_u32(o, (uint32_t)v);
}

/* A field: its length, then its bytes. */
static void f_int2(bout_t *o, int v) {
    b_u32(o, 2);
    b_u16(o, (uint16_t)(int16_t)v);
}
static void f_int4(bout_t *o, int64_t v) {
    b_u32(o, 4);
    b_u32(o, (uint32_t)(int32_t)v);
}
static void f_int8(bout_t *o, int64_t v) {
    b_u32(o, 8);
    b_u64(o, (uint64_t)v);
}
static void f_float4(bout_t *o, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    b_u32(o, 4);
    b_u32(o, u);
}
static void f_float8(bout_t *o, double v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    b_u32(o, 8);
    b_u64(o, u);
}
/* uuid: its 16 bytes as they are (network order already). */
static void f_uuid(bout_t *o, const uint8_t id[FM_UUID_BYTES]) {
    b_u32(o, FM_UUID_BYTES);
    b_bytes(o, id, FM_UUID_BYTES);
}
static void f_text(bout_t *o, const char *s) {
    size_t n = strlen(s);
    b_u32(o, (uint32_t)n);
    b_bytes(o, s, n);
}
static void f_timestamptz(bout_t *o, int64_t unix_us) { f_int8(o, unix_us - PG_EPOCH_US); }

size_t fm_rows_binary_header(uint8_t *buf) {
    static const uint8_t sig[11] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', 0xff, '\r', '\n', 0};
    memcpy(buf, sig, 11);
    memset(buf + 11, 0, 8); /* flags (no OIDs) and header-extension length */
    return FM_ROWS_BINARY_HEADER_LEN;
}

size_t fm_rows_binary_trailer(uint8_t *buf) {
    buf[0] = 0xff;
    buf[1] = 0xff;
    return FM_ROWS_BINARY_TRAILER_LEN;
}

static int b_finish(bout_t *o, const char *what) {
    if (o->overflow)
        return fm_fail(FM_ETRUNCATED, "%s row does not fit in %zu bytes", what, o->cap);
    return (int)o->len;
}

int fm_rows_prediction_binary(uint8_t *buf, size_t cap, const fm_prediction_row_t *r) {
    int rc = check_prediction(r);
    if (rc)
        return rc;
    bout_t o = {buf, cap, 0, 0};
    b_u16(&o, 12);
    f_uuid(&o, r->request_id);
    f_int2(&o, r->image_index);
    f_timestamptz(&o, r->ts_us);
    f_text(&o, fm_model_role_name(r->role)); /* enums travel as their labels */
    f_text(&o, r->model_version);
    f_text(&o, fm_rows_route_name(r->route));
    f_int2(&o, r->label);
    f_float4(&o, r->confidence);
    /* real[]: ndim 1, no nulls, element type float4, 10 elements from 1. */
    b_u32(&o, 20 + 10 * 8);
    b_u32(&o, 1);
    b_u32(&o, 0);
    b_u32(&o, FLOAT4_OID);
    b_u32(&o, 10);
    b_u32(&o, 1);
    for (int i = 0; i < 10; i++)
        f_float4(&o, r->probs[i]);
    f_int4(&o, r->queue_us);
    f_int4(&o, r->compute_us);
    f_int4(&o, r->total_us);
    return b_finish(&o, "prediction");
}

int fm_rows_sampled_binary(uint8_t *buf, size_t cap, const uint8_t request_id[FM_UUID_BYTES], int image_index, int64_t ts_us,
                           const char *model_version, const uint8_t *image, const double features[FM_PIXEL_FEATURES]) {
    int rc = check_sampled(image_index, model_version, features);
    if (rc)
        return rc;
    bout_t o = {buf, cap, 0, 0};
    b_u16(&o, 11);
    f_uuid(&o, request_id);
    f_int2(&o, image_index);
    f_timestamptz(&o, ts_us);
    f_text(&o, model_version);
    b_u32(&o, FM_PIXEL_COUNT); /* bytea: the raw bytes */
    b_bytes(&o, image, FM_PIXEL_COUNT);
    for (int i = 0; i < FM_PIXEL_FEATURES; i++)
        f_float8(&o, features[i]);
    return b_finish(&o, "sampled input");
}
