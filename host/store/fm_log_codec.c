/* fm_log_codec.c: encoders and decoders of the prediction log's batches
 * (see fm_log_codec.h). */
#include "fm_log_codec.h"

#include <stdlib.h>
#include <string.h>

#include "fm_error.h"

static uint8_t *w16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    return p + 2;
}
static uint8_t *w32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
    return p + 4;
}
static uint8_t *w64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
    return p + 8;
}
static uint8_t *wf32(uint8_t *p, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return w32(p, u);
}
static uint16_t r16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t r32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t r64(const uint8_t *p) { return (uint64_t)r32(p) | (uint64_t)r32(p + 4) << 32; }
static float rf32(const uint8_t *p) {
    uint32_t u = r32(p);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t clamp_u32(uint64_t v) { return v > 0xffffffffu ? 0xffffffffu : (uint32_t)v; }

int fm_logc_role(const char *role) {
    if (role && strcmp(role, "stable") == 0)
        return FM_ROLE_STABLE;
    if (role && strcmp(role, "canary") == 0)
        return FM_ROLE_CANARY;
    return -1;
}

int fm_logc_route(const char *routing) {
    if (routing && strcmp(routing, "ab") == 0)
        return FM_ROUTE_AB;
    if (routing && strcmp(routing, "pinned") == 0)
        return FM_ROUTE_PINNED;
    if (routing && strcmp(routing, "sticky") == 0)
        return FM_ROUTE_STICKY;
    return -1;
}

size_t fm_logc_request_bytes(const fm_prediction_t *p, size_t count, size_t sampled) {
    return FM_LOGC_REQUEST_HEAD + strlen(p->model_version) + count * FM_LOGC_IMAGE_HEAD + sampled * FM_PIXEL_COUNT;
}

size_t fm_logc_put_request(uint8_t *dst, const fm_prediction_t *p, const uint8_t request_id[16],
                           fm_model_role_t role, fm_route_t route, size_t first, size_t count,
                           const uint8_t *sampled) {
    size_t vlen = strlen(p->model_version);
    uint8_t *q = dst;
    *q++ = 'R';
    *q++ = (uint8_t)role;
    *q++ = (uint8_t)route;
    *q++ = (uint8_t)vlen;
    q = w16(q, (uint16_t)count);
    q = w16(q, 0);
    memcpy(q, request_id, 16);
    q += 16;
    q = w64(q, (uint64_t)p->received_wall_us);
    q = w32(q, clamp_u32(p->queue_us));
    q = w32(q, clamp_u32(p->compute_us));
    q = w32(q, clamp_u32(p->total_us));
    memcpy(q, p->model_version, vlen);
    q += vlen;
    for (size_t k = 0; k < count; k++) {
        size_t i = first + k;
        q = w16(q, (uint16_t)i);
        *q++ = (uint8_t)p->labels[i];
        *q++ = sampled[k] ? 1 : 0;
        q = wf32(q, p->confidence[i]);
        for (int c = 0; c < 10; c++)
            q = wf32(q, p->probs[i * 10 + (size_t)c]);
        if (sampled[k]) {
            memcpy(q, fm_prediction_image(p, i), FM_PIXEL_COUNT);
            q += FM_PIXEL_COUNT;
        }
    }
    return (size_t)(q - dst);
}

void fm_logc_rows_free(fm_logc_rows_t *r) {
    free(r->rows);
    free(r->images);
    memset(r, 0, sizeof *r);
}

static int grow(fm_logc_rows_t *r, size_t need) {
    if (need <= r->cap)
        return 0;
    size_t cap = r->cap ? r->cap : 1024;
    while (cap < need)
        cap *= 2;
    fm_prediction_row_t *rows = realloc(r->rows, cap * sizeof *rows);
    if (!rows)
        return fm_fail(FM_ENOMEM, "log batch: out of memory for %zu rows", cap);
    r->rows = rows;
    const uint8_t **imgs = realloc(r->images, cap * sizeof *imgs);
    if (!imgs)
        return fm_fail(FM_ENOMEM, "log batch: out of memory for %zu rows", cap);
    r->images = imgs;
    r->cap = cap;
    return 0;
}

/* The decoder's copy of a version string (batches hold one or two). */
static const char *intern(fm_logc_rows_t *r, const uint8_t *s, size_t len) {
    for (int i = r->nversions - 1; i >= 0; i--)
        if (strlen(r->versions[i]) == len && memcmp(r->versions[i], s, len) == 0)
            return r->versions[i];
    if (r->nversions == FM_LOGC_MAX_VERSIONS)
        return NULL;
    memcpy(r->versions[r->nversions], s, len);
    r->versions[r->nversions][len] = '\0';
    return r->versions[r->nversions++];
}

int fm_logc_decode_predictions(const uint8_t *payload, size_t len, fm_logc_rows_t *out) {
    out->n = 0;
    out->sampled = 0;
    out->nversions = 0;
    size_t off = 0;
    while (off < len) {
        const uint8_t *h = payload + off;
        if (len - off < FM_LOGC_REQUEST_HEAD || h[0] != 'R' || h[1] > 1 || h[2] > 2 || h[3] == 0 || h[3] > 127 ||
            len - off - FM_LOGC_REQUEST_HEAD < h[3])
            return fm_fail(FM_EFORMAT, "log batch: no request entry at offset %zu", off);
        size_t vlen = h[3], count = r16(h + 4);
        const char *version = intern(out, h + FM_LOGC_REQUEST_HEAD, vlen);
        if (!version)
            return fm_fail(FM_EFORMAT, "log batch: more than %d model versions", FM_LOGC_MAX_VERSIONS);
        int rc = grow(out, out->n + count);
        if (rc)
            return rc;
        off += FM_LOGC_REQUEST_HEAD + vlen;
        for (size_t k = 0; k < count; k++) {
            const uint8_t *e = payload + off;
            if (len - off < FM_LOGC_IMAGE_HEAD || e[3] > 1 ||
                (e[3] && len - off - FM_LOGC_IMAGE_HEAD < FM_PIXEL_COUNT))
                return fm_fail(FM_EFORMAT, "log batch: image entry at offset %zu is cut short", off);
            fm_prediction_row_t *r = &out->rows[out->n];
            memset(r, 0, sizeof *r);
            memcpy(r->request_id, h + 8, 16);
            r->ts_us = (int64_t)r64(h + 24);
            r->queue_us = r32(h + 32);
            r->compute_us = r32(h + 36);
            r->total_us = r32(h + 40);
            r->role = (fm_model_role_t)h[1];
            r->route = (fm_route_t)h[2];
            r->model_version = version;
            r->image_index = r16(e);
            r->label = e[2];
            r->confidence = rf32(e + 4);
            for (int c = 0; c < 10; c++)
                r->probs[c] = rf32(e + 8 + 4 * c);
            off += FM_LOGC_IMAGE_HEAD;
            out->images[out->n] = NULL;
            if (e[3]) {
                out->images[out->n] = payload + off;
                off += FM_PIXEL_COUNT;
                out->sampled++;
            }
            out->n++;
        }
    }
    return 0;
}

size_t fm_logc_put_feedback(uint8_t *dst, const fm_feedback_row_t *f) {
    size_t slen = f->source ? strlen(f->source) : 0;
    if (slen > FM_FEEDBACK_SOURCE_MAX)
        slen = FM_FEEDBACK_SOURCE_MAX;
    uint8_t *q = dst;
    memcpy(q, f->request_id, 16);
    q += 16;
    q = w64(q, (uint64_t)f->received_us);
    q = w16(q, (uint16_t)f->image_index);
    *q++ = (uint8_t)f->label;
    /* 255 marks "no source", so an empty string survives as one. */
    *q++ = f->source ? (uint8_t)slen : 255;
    memcpy(q, f->source ? f->source : "", slen);
    return (size_t)(q - dst) + slen;
}

int fm_logc_decode_feedback(const uint8_t *payload, size_t len, fm_feedback_row_t **rows, size_t *n,
                            char **strings) {
    *rows = NULL;
    *n = 0;
    *strings = NULL;
    size_t count = 0, off = 0;
    while (off < len) { /* count and check first */
        if (len - off < FM_LOGC_FEEDBACK_HEAD)
            return fm_fail(FM_EFORMAT, "feedback batch: entry at offset %zu is cut short", off);
        size_t s = payload[off + 27] == 255 ? 0 : payload[off + 27];
        if (s > FM_FEEDBACK_SOURCE_MAX || len - off - FM_LOGC_FEEDBACK_HEAD < s)
            return fm_fail(FM_EFORMAT, "feedback batch: entry at offset %zu is cut short", off);
        off += FM_LOGC_FEEDBACK_HEAD + s;
        count++;
    }
    fm_feedback_row_t *r = calloc(count ? count : 1, sizeof *r);
    char *str = malloc(count * (FM_FEEDBACK_SOURCE_MAX + 1) + 1);
    if (!r || !str) {
        free(r);
        free(str);
        return fm_fail(FM_ENOMEM, "feedback batch: out of memory");
    }
    off = 0;
    char *sp = str;
    for (size_t i = 0; i < count; i++) {
        const uint8_t *e = payload + off;
        memcpy(r[i].request_id, e, 16);
        r[i].received_us = (int64_t)r64(e + 16);
        r[i].image_index = r16(e + 24);
        r[i].label = e[26];
        size_t s = e[27] == 255 ? 0 : e[27];
        if (e[27] != 255) {
            memcpy(sp, e + FM_LOGC_FEEDBACK_HEAD, s);
            sp[s] = '\0';
            r[i].source = sp;
            sp += s + 1;
        }
        off += FM_LOGC_FEEDBACK_HEAD + s;
    }
    *rows = r;
    *n = count;
    *strings = str;
    return 0;
}

uint8_t *fm_logc_encode_delta(int64_t bucket_start_us, const char *version, const fm_pixel_hist_t *h,
                              const fm_pred_hist_t *ph, size_t *len) {
    size_t vlen = strlen(version);
    size_t m = 0, c = 0;
    for (size_t i = 0; h && i < (size_t)FM_PIXEL_COUNT * FM_PIXEL_VALUES; i++)
        m += h->counts[i] != 0;
    for (int q = 0; ph && q <= FM_CONF_GRID; q++)
        c += ph->conf[q] != 0;
    size_t n = 8 + 1 + vlen + 8 + 8 + 80 + 4 + 8 * m + 4 + 6 * c;
    uint8_t *buf = malloc(n), *q = buf;
    if (!buf) {
        fm_fail(FM_ENOMEM, "rollup delta: out of memory");
        return NULL;
    }
    q = w64(q, (uint64_t)bucket_start_us);
    *q++ = (uint8_t)vlen;
    memcpy(q, version, vlen);
    q += vlen;
    q = w64(q, h ? h->images : 0);
    q = w64(q, ph ? ph->predictions : 0);
    for (int k = 0; k < 10; k++)
        q = w64(q, ph ? ph->classes[k] : 0);
    q = w32(q, (uint32_t)m);
    for (size_t i = 0; h && i < (size_t)FM_PIXEL_COUNT * FM_PIXEL_VALUES; i++)
        if (h->counts[i]) {
            q = w32(q, (uint32_t)i);
            q = w32(q, h->counts[i]);
        }
    q = w32(q, (uint32_t)c);
    for (int k = 0; ph && k <= FM_CONF_GRID; k++)
        if (ph->conf[k]) {
            q = w16(q, (uint16_t)k);
            q = w32(q, ph->conf[k]);
        }
    *len = n;
    return buf;
}

int fm_logc_decode_delta(const uint8_t *payload, size_t len, int64_t *bucket_start_us, char version[128],
                         fm_pixel_hist_t *h, fm_pred_hist_t *ph) {
    const uint8_t *p = payload, *end = payload + len;
#define NEED(k)                                                                                \
    do {                                                                                       \
        if ((size_t)(end - p) < (size_t)(k))                                                   \
            return fm_fail(FM_EFORMAT, "rollup delta record cut short at offset %zu",          \
                           (size_t)(p - payload));                                             \
    } while (0)
    NEED(9);
    *bucket_start_us = (int64_t)r64(p);
    size_t vlen = p[8];
    p += 9;
    if (vlen == 0 || vlen > 127)
        return fm_fail(FM_EFORMAT, "rollup delta record: version length %zu", vlen);
    NEED(vlen + 100);
    memcpy(version, p, vlen);
    version[vlen] = '\0';
    p += vlen;
    h->images = r64(p);
    ph->predictions = r64(p + 8);
    p += 16;
    for (int k = 0; k < 10; k++, p += 8)
        ph->classes[k] = r64(p);
    uint32_t m = r32(p);
    p += 4;
    NEED((size_t)m * 8 + 4);
    for (uint32_t i = 0; i < m; i++, p += 8) {
        uint32_t idx = r32(p);
        if (idx >= (uint32_t)FM_PIXEL_COUNT * FM_PIXEL_VALUES)
            return fm_fail(FM_EFORMAT, "rollup delta record: pixel count index %u", idx);
        h->counts[idx] = r32(p + 4);
    }
    uint32_t c = r32(p);
    p += 4;
    NEED((size_t)c * 6);
    for (uint32_t i = 0; i < c; i++, p += 6) {
        uint16_t q = r16(p);
        if (q > FM_CONF_GRID)
            return fm_fail(FM_EFORMAT, "rollup delta record: confidence index %u", q);
        ph->conf[q] = r32(p + 2);
    }
#undef NEED
    return 0;
}
