/* fm_msgpack.c: msgpack-c behind fm_msgpack.h: packing into fm_mp_buf_t, value
 * views, and the limit-checking frame scanner that runs ahead of msgpack-c's
 * streaming unpacker. */
#include "fm_msgpack.h"

#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_error.h"

/* ---- Buffer and packing ------------------------------------------------ */

void fm_mp_buf_init(fm_mp_buf_t *b) { memset(b, 0, sizeof *b); }

void fm_mp_buf_free(fm_mp_buf_t *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}

int fm_mp_buf_reserve(fm_mp_buf_t *b, size_t extra) {
    if (b->oom)
        return FM_ENOMEM;
    if (b->cap - b->len >= extra)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < extra) {
        if (cap > ((size_t)1 << 40)) {
            b->oom = 1;
            return FM_ENOMEM;
        }
        cap *= 2;
    }
    char *p = realloc(b->data, cap);
    if (!p) {
        b->oom = 1;
        return FM_ENOMEM;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

void fm_mp_buf_append(fm_mp_buf_t *b, const void *p, size_t n) {
    if (n == 0 || fm_mp_buf_reserve(b, n) != 0)
        return;
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

char *fm_mp_buf_steal(fm_mp_buf_t *b, size_t *len) {
    char *p = b->data;
    if (len)
        *len = b->len;
    memset(b, 0, sizeof *b);
    return p;
}

static int buf_write(void *data, const char *buf, size_t len) {
    fm_mp_buf_append((fm_mp_buf_t *)data, buf, len);
    return 0;
}

/* msgpack-c's packers are static inline; a packer is two pointers, so one is
 * made on the stack per call. */
#define PACKER(b)           \
    msgpack_packer pk_;     \
    pk_.data = (b);         \
    pk_.callback = buf_write

void fm_mp_pack_nil(fm_mp_buf_t *b) {
    PACKER(b);
    msgpack_pack_nil(&pk_);
}
void fm_mp_pack_bool(fm_mp_buf_t *b, int v) {
    PACKER(b);
    if (v)
        msgpack_pack_true(&pk_);
    else
        msgpack_pack_false(&pk_);
}
void fm_mp_pack_uint(fm_mp_buf_t *b, uint64_t v) {
    PACKER(b);
    msgpack_pack_uint64(&pk_, v);
}
void fm_mp_pack_int(fm_mp_buf_t *b, int64_t v) {
    PACKER(b);
    msgpack_pack_int64(&pk_, v);
}
void fm_mp_pack_float(fm_mp_buf_t *b, float v) {
    PACKER(b);
    msgpack_pack_float(&pk_, v);
}
void fm_mp_pack_double(fm_mp_buf_t *b, double v) {
    PACKER(b);
    msgpack_pack_double(&pk_, v);
}
void fm_mp_pack_str(fm_mp_buf_t *b, const char *s, size_t len) {
    PACKER(b);
    msgpack_pack_str(&pk_, len);
    msgpack_pack_str_body(&pk_, s, len);
}
void fm_mp_pack_cstr(fm_mp_buf_t *b, const char *s) {
    if (!s)
        fm_mp_pack_nil(b);
    else
        fm_mp_pack_str(b, s, strlen(s));
}
void fm_mp_pack_bin(fm_mp_buf_t *b, const void *p, size_t len) {
    PACKER(b);
    msgpack_pack_bin(&pk_, len);
    msgpack_pack_bin_body(&pk_, p, len);
}
void fm_mp_pack_bin_header(fm_mp_buf_t *b, size_t len) {
    PACKER(b);
    msgpack_pack_bin(&pk_, len);
}
void fm_mp_pack_array(fm_mp_buf_t *b, uint32_t n) {
    PACKER(b);
    msgpack_pack_array(&pk_, n);
}
void fm_mp_pack_map(fm_mp_buf_t *b, uint32_t n) {
    PACKER(b);
    msgpack_pack_map(&pk_, n);
}
void fm_mp_pack_key(fm_mp_buf_t *b, const char *key) { fm_mp_pack_str(b, key, strlen(key)); }

/* ---- Value views ------------------------------------------------------- */

fm_mp_type_t fm_mp_type(const fm_mp_obj_t *o) {
    if (!o)
        return FM_MP_NIL;
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return FM_MP_NIL;
    case MSGPACK_OBJECT_BOOLEAN: return FM_MP_BOOL;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return FM_MP_UINT;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return FM_MP_INT;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return FM_MP_FLOAT;
    case MSGPACK_OBJECT_STR: return FM_MP_STR;
    case MSGPACK_OBJECT_BIN: return FM_MP_BIN;
    case MSGPACK_OBJECT_ARRAY: return FM_MP_ARRAY;
    case MSGPACK_OBJECT_MAP: return FM_MP_MAP;
    case MSGPACK_OBJECT_EXT: return FM_MP_EXT;
    }
    return FM_MP_EXT;
}

const char *fm_mp_type_name(fm_mp_type_t t) {
    static const char *const names[] = {"nil", "bool", "uint", "int", "float", "str", "bin", "array", "map", "ext"};
    return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "?";
}

int fm_mp_get_u64(const fm_mp_obj_t *o, uint64_t *out) {
    if (!o || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return FM_ESHAPE;
    *out = o->via.u64;
    return 0;
}

int fm_mp_get_i64(const fm_mp_obj_t *o, int64_t *out) {
    if (!o)
        return FM_ESHAPE;
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *out = o->via.i64;
        return 0;
    }
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= (uint64_t)INT64_MAX) {
        *out = (int64_t)o->via.u64;
        return 0;
    }
    return FM_ESHAPE;
}

int fm_mp_get_double(const fm_mp_obj_t *o, double *out) {
    if (!o)
        return FM_ESHAPE;
    switch (o->type) {
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: *out = o->via.f64; return 0;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: *out = (double)o->via.u64; return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: *out = (double)o->via.i64; return 0;
    default: return FM_ESHAPE;
    }
}

int fm_mp_get_bool(const fm_mp_obj_t *o, int *out) {
    if (!o || o->type != MSGPACK_OBJECT_BOOLEAN)
        return FM_ESHAPE;
    *out = o->via.boolean ? 1 : 0;
    return 0;
}

const char *fm_mp_get_str(const fm_mp_obj_t *o, size_t *len) {
    if (!o || o->type != MSGPACK_OBJECT_STR)
        return NULL;
    *len = o->via.str.size;
    return o->via.str.ptr;
}

const uint8_t *fm_mp_get_bin(const fm_mp_obj_t *o, size_t *len) {
    if (!o || o->type != MSGPACK_OBJECT_BIN)
        return NULL;
    *len = o->via.bin.size;
    return (const uint8_t *)o->via.bin.ptr;
}

int fm_mp_copy_str(const fm_mp_obj_t *o, char *dst, size_t cap) {
    size_t n;
    const char *s = fm_mp_get_str(o, &n);
    if (!s || n + 1 > cap)
        return FM_ESHAPE;
    memcpy(dst, s, n);
    dst[n] = '\0';
    return 0;
}

int fm_mp_str_eq(const fm_mp_obj_t *o, const char *s) {
    size_t n;
    const char *p = fm_mp_get_str(o, &n);
    return p && n == strlen(s) && memcmp(p, s, n) == 0;
}

uint32_t fm_mp_len(const fm_mp_obj_t *o) {
    if (!o)
        return 0;
    if (o->type == MSGPACK_OBJECT_ARRAY)
        return o->via.array.size;
    if (o->type == MSGPACK_OBJECT_MAP)
        return o->via.map.size;
    return 0;
}

const fm_mp_obj_t *fm_mp_at(const fm_mp_obj_t *a, uint32_t i) {
    if (!a || a->type != MSGPACK_OBJECT_ARRAY || i >= a->via.array.size)
        return NULL;
    return &a->via.array.ptr[i];
}

const fm_mp_obj_t *fm_mp_key_at(const fm_mp_obj_t *m, uint32_t i) {
    if (!m || m->type != MSGPACK_OBJECT_MAP || i >= m->via.map.size)
        return NULL;
    return &m->via.map.ptr[i].key;
}

const fm_mp_obj_t *fm_mp_val_at(const fm_mp_obj_t *m, uint32_t i) {
    if (!m || m->type != MSGPACK_OBJECT_MAP || i >= m->via.map.size)
        return NULL;
    return &m->via.map.ptr[i].val;
}

const fm_mp_obj_t *fm_mp_map_get(const fm_mp_obj_t *m, const char *key) {
    if (!m || m->type != MSGPACK_OBJECT_MAP)
        return NULL;
    size_t kl = strlen(key);
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *k = &m->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == kl && memcmp(k->via.str.ptr, key, kl) == 0)
            return &m->via.map.ptr[i].val;
    }
    return NULL;
}

typedef struct {
    char *buf;
    size_t cap, len;
} text_t;

static void text_put(text_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void text_put(text_t *t, const char *fmt, ...) {
    if (t->len + 1 >= t->cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        t->len = t->len + (size_t)n < t->cap ? t->len + (size_t)n : t->cap - 1;
}

static void text_str(text_t *t, const char *s, size_t n) {
    text_put(t, "\"");
    for (size_t i = 0; i < n && t->len + 8 < t->cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            text_put(t, "\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            text_put(t, "\\x%02x", c);
        else
            text_put(t, "%c", c);
    }
    text_put(t, "\"");
}

static void text_obj(text_t *t, const msgpack_object *o, int depth) {
    if (depth > 8) {
        text_put(t, "...");
        return;
    }
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: text_put(t, "null"); break;
    case MSGPACK_OBJECT_BOOLEAN: text_put(t, o->via.boolean ? "true" : "false"); break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: text_put(t, "%llu", (unsigned long long)o->via.u64); break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: text_put(t, "%lld", (long long)o->via.i64); break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: text_put(t, "%g", o->via.f64); break;
    case MSGPACK_OBJECT_STR: text_str(t, o->via.str.ptr, o->via.str.size); break;
    case MSGPACK_OBJECT_BIN: text_put(t, "<bin %u bytes>", o->via.bin.size); break;
    case MSGPACK_OBJECT_EXT: text_put(t, "<ext %d, %u bytes>", o->via.ext.type, o->via.ext.size); break;
    case MSGPACK_OBJECT_ARRAY:
        text_put(t, "[");
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (i)
                text_put(t, ", ");
            text_obj(t, &o->via.array.ptr[i], depth + 1);
        }
        text_put(t, "]");
        break;
    case MSGPACK_OBJECT_MAP:
        text_put(t, "{");
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            if (i)
                text_put(t, ", ");
            text_obj(t, &o->via.map.ptr[i].key, depth + 1);
            text_put(t, ": ");
            text_obj(t, &o->via.map.ptr[i].val, depth + 1);
        }
        text_put(t, "}");
        break;
    }
}

char *fm_mp_to_text(const fm_mp_obj_t *o, char *buf, size_t cap) {
    if (!cap)
        return buf;
    text_t t = {buf, cap, 0};
    buf[0] = '\0';
    if (o)
        text_obj(&t, o, 0);
    else
        text_put(&t, "null");
    return buf;
}

/* ---- Frame scanner ----------------------------------------------------- */

/* Walks msgpack headers ahead of msgpack-c: knows where the current frame
 * ends (or at least how far it extends), and refuses a frame whose declared
 * sizes break a limit before its payload is read. msgpack-c allocates an
 * array's element table as soon as it sees the header, so an array32 claiming
 * four billion elements must be refused here, not there. */
#define SCAN_MAX_DEPTH 30 /* msgpack-c's own parse stack is 32 deep */

typedef struct scanner {
    fm_mp_limits_t lim;
    size_t pos;      /* frame bytes accounted for; may run ahead of the data */
    uint32_t objects;
    int depth;       /* open containers plus the pending root */
    uint32_t left[SCAN_MAX_DEPTH + 1];
    int ended;       /* the last element's header was seen: the frame is pos bytes */
    /* RPC request recognition: [0, msgid, ...] */
    uint32_t root_count; /* elements of the root array (0: root is not an array) */
    int have_msgid;
    uint64_t msgid;
    int type_is_request;
} scanner_t;

static void scan_reset(scanner_t *s) {
    fm_mp_limits_t lim = s->lim;
    memset(s, 0, sizeof *s);
    s->lim = lim;
    s->depth = 1;
    s->left[0] = 1;
}

static uint64_t be(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Header layout of the element starting with byte t: `hlen` header bytes (the
 * type byte included), `lenbytes` of them encoding a payload length or count
 * (0 when the length is fixed and given in *fixed), `kind` 0 scalar,
 * 1 payload (str/bin/ext), 2 array, 3 map. Returns -1 for 0xc1. */
static int header_shape(uint8_t t, int *hlen, int *lenbytes, uint64_t *fixed, int *kind) {
    *lenbytes = 0;
    *fixed = 0;
    *kind = 0;
    *hlen = 1;
    if (t <= 0x7f || t >= 0xe0)
        return 0;
    if (t <= 0x8f) {
        *kind = 3;
        *fixed = t & 0x0f;
        return 0;
    }
    if (t <= 0x9f) {
        *kind = 2;
        *fixed = t & 0x0f;
        return 0;
    }
    if (t <= 0xbf) {
        *kind = 1;
        *fixed = t & 0x1f;
        return 0;
    }
    switch (t) {
    case 0xc0: case 0xc2: case 0xc3: return 0;
    case 0xc1: return -1;
    case 0xc4: *kind = 1; *lenbytes = 1; *hlen = 2; return 0;
    case 0xc5: *kind = 1; *lenbytes = 2; *hlen = 3; return 0;
    case 0xc6: *kind = 1; *lenbytes = 4; *hlen = 5; return 0;
    case 0xc7: *kind = 1; *lenbytes = 1; *hlen = 3; return 0; /* + ext type byte */
    case 0xc8: *kind = 1; *lenbytes = 2; *hlen = 4; return 0;
    case 0xc9: *kind = 1; *lenbytes = 4; *hlen = 6; return 0;
    case 0xca: *hlen = 5; return 0;
    case 0xcb: *hlen = 9; return 0;
    case 0xcc: case 0xd0: *hlen = 2; return 0;
    case 0xcd: case 0xd1: *hlen = 3; return 0;
    case 0xce: case 0xd2: *hlen = 5; return 0;
    case 0xcf: case 0xd3: *hlen = 9; return 0;
    case 0xd4: *hlen = 3; return 0;
    case 0xd5: *hlen = 4; return 0;
    case 0xd6: *hlen = 6; return 0;
    case 0xd7: *hlen = 10; return 0;
    case 0xd8: *hlen = 18; return 0;
    case 0xd9: *kind = 1; *lenbytes = 1; *hlen = 2; return 0;
    case 0xda: *kind = 1; *lenbytes = 2; *hlen = 3; return 0;
    case 0xdb: *kind = 1; *lenbytes = 4; *hlen = 5; return 0;
    case 0xdc: *kind = 2; *lenbytes = 2; *hlen = 3; return 0;
    case 0xdd: *kind = 2; *lenbytes = 4; *hlen = 5; return 0;
    case 0xde: *kind = 3; *lenbytes = 2; *hlen = 3; return 0;
    case 0xdf: *kind = 3; *lenbytes = 4; *hlen = 5; return 0;
    }
    return -1;
}

/* Non-negative integer value of a scalar header, for msgid recognition. */
static int header_uint(const uint8_t *p, uint64_t *v) {
    uint8_t t = p[0];
    if (t <= 0x7f) { *v = t; return 1; }
    switch (t) {
    case 0xcc: *v = p[1]; return 1;
    case 0xcd: *v = be(p + 1, 2); return 1;
    case 0xce: *v = be(p + 1, 4); return 1;
    case 0xcf: *v = be(p + 1, 8); return 1;
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
        int n = t == 0xd0 ? 1 : t == 0xd1 ? 2 : t == 0xd2 ? 4 : 8;
        uint64_t raw = be(p + 1, n);
        uint64_t sign = (uint64_t)1 << (8 * n - 1);
        if (raw & sign)
            return 0;
        *v = raw;
        return 1;
    }
    }
    return 0;
}

/* Scans the `avail` bytes at `base` (the start of the current frame) as far as
 * the headers present allow. Returns 1 when the whole frame (pos bytes) is
 * present, 0 when more bytes are needed (and *need says how many at least),
 * or a negative code. */
static int scan(scanner_t *s, const uint8_t *base, size_t avail, size_t *need) {
    while (!s->ended) {
        if (s->pos >= avail) {
            *need = s->pos - avail + 1;
            return 0;
        }
        const uint8_t *p = base + s->pos;
        int hlen, lenbytes, kind;
        uint64_t len;
        if (header_shape(p[0], &hlen, &lenbytes, &len, &kind) != 0)
            return fm_fail(FM_EFORMAT, "byte 0x%02x at offset %zu is not a msgpack type", p[0], s->pos);
        if (s->pos + (size_t)hlen > avail) {
            *need = s->pos + (size_t)hlen - avail;
            return 0;
        }
        if (lenbytes)
            len = be(p + 1, lenbytes);
        if (++s->objects > s->lim.max_objects)
            return fm_fail(FM_EINVAL, "frame has more than %u values", s->lim.max_objects);
        /* RPC recognition: direct children 0 and 1 of a root array. */
        if (s->depth == 2 && s->root_count) {
            uint32_t idx = s->root_count - s->left[1];
            uint64_t v;
            if (idx == 0)
                s->type_is_request = header_uint(p, &v) && v == 0;
            else if (idx == 1 && s->type_is_request && header_uint(p, &v)) {
                s->msgid = v;
                s->have_msgid = 1;
            }
        }
        s->left[s->depth - 1]--;
        s->pos += (size_t)hlen;
        if (kind == 1) {
            if (len > s->lim.max_frame_bytes || s->pos + len > s->lim.max_frame_bytes)
                return fm_fail(FM_EINVAL, "frame larger than the limit of %zu bytes (a value declares %llu bytes)",
                               s->lim.max_frame_bytes, (unsigned long long)len);
            s->pos += (size_t)len;
        } else if (kind >= 2) {
            uint64_t count = kind == 3 ? 2 * len : len;
            /* Each element takes at least one byte, and msgpack-c allocates
             * the element table from this count before reading any of them. */
            if (count > (uint64_t)(s->lim.max_objects - s->objects))
                return fm_fail(FM_EINVAL, "a %s declares %llu elements, above the limit of %u values per frame",
                               kind == 3 ? "map" : "array", (unsigned long long)len, s->lim.max_objects);
            if (s->pos + count > s->lim.max_frame_bytes)
                return fm_fail(FM_EINVAL, "frame larger than the limit of %zu bytes (a container declares %llu elements)",
                               s->lim.max_frame_bytes, (unsigned long long)len);
            if (s->depth == 1 && kind == 2)
                s->root_count = (uint32_t)count;
            if (count > 0) {
                if (s->depth >= s->lim.max_depth)
                    return fm_fail(FM_EINVAL, "values nested deeper than %d levels", s->lim.max_depth);
                s->left[s->depth++] = (uint32_t)count;
            }
        }
        if (s->pos > s->lim.max_frame_bytes)
            return fm_fail(FM_EINVAL, "frame larger than the limit of %zu bytes", s->lim.max_frame_bytes);
        while (s->depth > 0 && s->left[s->depth - 1] == 0)
            s->depth--;
        if (s->depth == 0)
            s->ended = 1;
    }
    if (s->pos > avail) {
        *need = s->pos - avail;
        return 0;
    }
    return 1;
}

static int limits_check(const fm_mp_limits_t *lim) {
    if (!lim || lim->max_frame_bytes < 16 || lim->max_objects < 1 || lim->max_depth < 1 ||
        lim->max_depth > SCAN_MAX_DEPTH)
        return fm_fail(FM_EINVAL, "msgpack limits out of range (frame >= 16 bytes, objects >= 1, depth 1..%d)",
                       SCAN_MAX_DEPTH);
    return 0;
}

/* ---- Messages ------------------------------------------------------------ */

void fm_mp_msg_free(fm_mp_msg_t *m) {
    if (m)
        msgpack_zone_free((msgpack_zone *)m->zone_);
}

/* Moves the value into its own zone, with the message header beside it. */
static fm_mp_msg_t *msg_make(msgpack_zone *z, msgpack_object root, size_t frame_bytes) {
    /* msgpack-c 4 creates a zone lazily: a frame that needed no allocation
     * and references no buffer (a bare scalar) comes back without one. */
    if (!z && !(z = msgpack_zone_new(256)))
        return NULL;
    fm_mp_msg_t *m = msgpack_zone_malloc(z, sizeof *m + sizeof(msgpack_object));
    if (!m) {
        msgpack_zone_free(z);
        return NULL;
    }
    msgpack_object *r = (msgpack_object *)(m + 1);
    *r = root;
    m->root = r;
    m->frame_bytes = frame_bytes;
    m->zone_ = z;
    return m;
}

int fm_mp_decode(const void *data, size_t len, const fm_mp_limits_t *lim, fm_mp_msg_t **out) {
    *out = NULL;
    int rc = limits_check(lim);
    if (rc)
        return rc;
    scanner_t s = {.lim = *lim};
    scan_reset(&s);
    size_t need = 0;
    rc = scan(&s, data, len, &need);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return fm_fail(FM_ETRUNCATED, "msgpack value truncated: %zu bytes, at least %zu more needed", len, need);
    if (s.pos != len)
        return fm_fail(FM_EFORMAT, "%zu trailing bytes after a %zu-byte msgpack value", len - s.pos, s.pos);
    msgpack_zone *z = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    if (!z)
        return fm_fail(FM_ENOMEM, "msgpack zone");
    msgpack_object obj;
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack(data, len, &off, z, &obj);
    if (ur != MSGPACK_UNPACK_SUCCESS) {
        msgpack_zone_free(z);
        return fm_fail(ur == MSGPACK_UNPACK_NOMEM_ERROR ? FM_ENOMEM : FM_EFORMAT, "msgpack value does not parse");
    }
    *out = msg_make(z, obj, len);
    return *out ? 0 : fm_fail(FM_ENOMEM, "msgpack message");
}

/* ---- Streaming reader ---------------------------------------------------- */

#define READ_MIN_BULK 1024

struct fm_mp_reader {
    msgpack_unpacker unp;
    scanner_t scan;
    size_t bulk;
    size_t need;  /* bytes the current frame certainly still needs (>= 1) */
    int failed;
    int failed_rc;
};

int fm_mp_reader_new(const fm_mp_limits_t *lim, size_t bulk_bytes, fm_mp_reader_t **out) {
    *out = NULL;
    int rc = limits_check(lim);
    if (rc)
        return rc;
    fm_mp_reader_t *r = calloc(1, sizeof *r);
    if (!r)
        return fm_fail(FM_ENOMEM, "msgpack reader");
    if (bulk_bytes < READ_MIN_BULK)
        bulk_bytes = READ_MIN_BULK;
    r->bulk = bulk_bytes;
    r->scan.lim = *lim;
    scan_reset(&r->scan);
    r->need = 1;
    /* A chunk holds one bulk read plus a whole largest frame. Pages are only
     * touched as bytes arrive, so a large limit costs address space, not
     * memory, until a client actually sends large frames. */
    if (!msgpack_unpacker_init(&r->unp, lim->max_frame_bytes + bulk_bytes + 64)) {
        free(r);
        return fm_fail(FM_ENOMEM, "msgpack unpacker of %zu bytes", lim->max_frame_bytes + bulk_bytes);
    }
    *out = r;
    return 0;
}

void fm_mp_reader_free(fm_mp_reader_t *r) {
    if (!r)
        return;
    msgpack_unpacker_destroy(&r->unp);
    free(r);
}

size_t fm_mp_reader_pending(const fm_mp_reader_t *r) { return r->unp.used - r->unp.off; }

int fm_mp_reader_frame_msgid(const fm_mp_reader_t *r, uint64_t *msgid) {
    if (!r->scan.have_msgid)
        return 0;
    *msgid = r->scan.msgid;
    return 1;
}

int fm_mp_reader_buffer(fm_mp_reader_t *r, char **buf, size_t *len) {
    size_t max_frame = r->scan.lim.max_frame_bytes;
    size_t avail = r->unp.used - r->unp.off;
    size_t free_ = r->unp.free;
    if (free_ > max_frame && free_ - max_frame >= READ_MIN_BULK) {
        /* Bulk: whatever frame is left incomplete by this read still has
         * max_frame bytes to finish in, so nothing ever has to move. */
        *buf = msgpack_unpacker_buffer(&r->unp);
        *len = free_ - max_frame;
        if (*len > r->bulk)
            *len = r->bulk;
        return 0;
    }
    if (avail == 0) {
        /* A frame boundary with the chunk nearly used: rewind it when no
         * message references it any more, else start a fresh one. Either way
         * zero bytes are copied. */
        if (!msgpack_unpacker_reserve_buffer(&r->unp, max_frame + r->bulk))
            return fm_fail(FM_ENOMEM, "msgpack read buffer of %zu bytes", max_frame + r->bulk);
        *buf = msgpack_unpacker_buffer(&r->unp);
        *len = r->unp.free - max_frame;
        if (*len > r->bulk)
            *len = r->bulk;
        return 0;
    }
    /* Near the end of a chunk with a frame in progress: take only bytes that
     * certainly belong to this frame; it fits because it started with at
     * least max_frame bytes free. */
    size_t need = r->need ? r->need : 1;
    if (need > free_)
        need = free_; /* cannot happen while frames respect the limit */
    if (need == 0)
        return fm_fail(FM_EINTERNAL, "msgpack reader out of room inside a frame");
    *buf = msgpack_unpacker_buffer(&r->unp);
    *len = need;
    return 0;
}

void fm_mp_reader_consumed(fm_mp_reader_t *r, size_t n) { msgpack_unpacker_buffer_consumed(&r->unp, n); }

int fm_mp_reader_next(fm_mp_reader_t *r, fm_mp_msg_t **out) {
    *out = NULL;
    if (r->failed)
        return fm_fail(r->failed_rc, "msgpack stream already failed");
    size_t avail = r->unp.used - r->unp.off;
    if (avail == 0) {
        r->need = 1;
        return 0;
    }
    size_t need = 1;
    int rc = scan(&r->scan, (const uint8_t *)r->unp.buffer + r->unp.off, avail, &need);
    if (rc < 0) {
        r->failed = 1;
        r->failed_rc = rc;
        return rc;
    }
    if (rc == 0) {
        r->need = need;
        return 0;
    }
    size_t frame = r->scan.pos;
    size_t off0 = r->unp.off;
    msgpack_unpacked res;
    msgpack_unpacked_init(&res);
    msgpack_unpack_return ur = msgpack_unpacker_next(&r->unp, &res);
    if (ur != MSGPACK_UNPACK_SUCCESS || r->unp.off - off0 != frame) {
        msgpack_unpacked_destroy(&res);
        r->failed = 1;
        r->failed_rc = ur == MSGPACK_UNPACK_NOMEM_ERROR ? FM_ENOMEM : FM_EFORMAT;
        return fm_fail(r->failed_rc, "msgpack frame of %zu bytes does not parse (unpacker status %d)", frame, (int)ur);
    }
    msgpack_zone *z = msgpack_unpacked_release_zone(&res);
    scan_reset(&r->scan);
    r->need = 1;
    *out = msg_make(z, res.data, frame);
    if (!*out) {
        r->failed = 1;
        r->failed_rc = FM_ENOMEM;
        return fm_fail(FM_ENOMEM, "msgpack message");
    }
    return 1;
}
