/* test_msgpack.c: the msgpack layer on its own: packing and reading back,
 * the frame reader under every way a stream can be cut into reads, proof that
 * a payload is never moved after read() wrote it, and refusal of frames whose
 * headers break a limit before any payload byte is needed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_msgpack.h"
#include "fm_proto.h"
#include "fm_test.h"

static const fm_mp_limits_t lim = {.max_frame_bytes = 1 << 20, .max_objects = 4096, .max_depth = 8};

static void test_pack_and_view(void) {
    fm_mp_buf_t b;
    fm_mp_buf_init(&b);
    fm_mp_pack_map(&b, 7);
    fm_mp_pack_key(&b, "u");
    fm_mp_pack_uint(&b, 1ull << 40);
    fm_mp_pack_key(&b, "i");
    fm_mp_pack_int(&b, -5);
    fm_mp_pack_key(&b, "f");
    fm_mp_pack_float(&b, 0.25f);
    fm_mp_pack_key(&b, "s");
    fm_mp_pack_cstr(&b, "hello");
    fm_mp_pack_key(&b, "b");
    fm_mp_pack_bin(&b, "\x01\x02\x03", 3);
    fm_mp_pack_key(&b, "a");
    fm_mp_pack_array(&b, 2);
    fm_mp_pack_bool(&b, 1);
    fm_mp_pack_nil(&b);
    fm_mp_pack_key(&b, "d");
    fm_mp_pack_double(&b, 1e300);
    FM_REQUIRE(!b.oom);
    fm_mp_msg_t *m;
    FM_REQUIRE_OK(fm_mp_decode(b.data, b.len, &lim, &m));
    uint64_t u;
    int64_t i;
    double d;
    size_t n;
    FM_CHECK_OK(fm_mp_get_u64(fm_mp_map_get(m->root, "u"), &u));
    FM_CHECK_EQ(u, 1ull << 40);
    FM_CHECK_OK(fm_mp_get_i64(fm_mp_map_get(m->root, "i"), &i));
    FM_CHECK_EQ(i, -5);
    FM_CHECK_ERR(fm_mp_get_u64(fm_mp_map_get(m->root, "i"), &u), FM_ESHAPE);
    FM_CHECK_OK(fm_mp_get_double(fm_mp_map_get(m->root, "f"), &d));
    FM_CHECK_NEAR(d, 0.25, 0);
    FM_CHECK_OK(fm_mp_get_double(fm_mp_map_get(m->root, "d"), &d));
    FM_CHECK_NEAR(d, 1e300, 0);
    FM_CHECK(fm_mp_str_eq(fm_mp_map_get(m->root, "s"), "hello"));
    const uint8_t *bin = fm_mp_get_bin(fm_mp_map_get(m->root, "b"), &n);
    FM_CHECK(bin && n == 3 && bin[2] == 3);
    /* Decoding references the input: the bin points into b.data. */
    FM_CHECK(bin >= (const uint8_t *)b.data && bin < (const uint8_t *)b.data + b.len);
    FM_CHECK_EQ(fm_mp_len(fm_mp_map_get(m->root, "a")), 2);
    FM_CHECK(fm_mp_map_get(m->root, "missing") == NULL);
    char text[256];
    fm_mp_to_text(m->root, text, sizeof text);
    FM_CHECK_CONTAINS(text, "\"s\": \"hello\"");
    FM_CHECK_CONTAINS(text, "<bin 3 bytes>");
    fm_mp_msg_free(m);
    /* Trailing and truncated input. */
    FM_CHECK_ERR(fm_mp_decode(b.data, b.len - 1, &lim, &m), FM_ETRUNCATED);
    fm_mp_pack_nil(&b);
    FM_CHECK_ERR(fm_mp_decode(b.data, b.len, &lim, &m), FM_EFORMAT);
    fm_mp_buf_free(&b);
}

/* A stream of varied frames: requests with bins of assorted sizes. */
static void build_stream(fm_mp_buf_t *s, int frames, size_t **bin_offsets, size_t **bin_sizes) {
    *bin_offsets = malloc((size_t)frames * sizeof(size_t));
    *bin_sizes = malloc((size_t)frames * sizeof(size_t));
    uint8_t *payload = malloc(300000);
    for (size_t i = 0; i < 300000; i++)
        payload[i] = (uint8_t)(i * 31 + 7);
    for (int f = 0; f < frames; f++) {
        size_t size = (size_t)((f * 7919) % 5 == 0 ? 200000 + f : (f * 613) % 3000 + 1);
        fm_mp_pack_array(s, 4);
        fm_mp_pack_uint(s, 0);
        fm_mp_pack_uint(s, (uint64_t)f);
        fm_mp_pack_cstr(s, "predict");
        fm_mp_pack_array(s, 1);
        fm_mp_pack_map(s, 1);
        fm_mp_pack_key(s, "images");
        fm_mp_pack_bin_header(s, size);
        (*bin_offsets)[f] = s->len;
        (*bin_sizes)[f] = size;
        fm_mp_buf_append(s, payload + (f % 97), size);
    }
    free(payload);
}

typedef struct write_rec {
    size_t stream_off, len;
    char *addr;
} write_rec_t;

/* Feeds the stream in reads of sizes drawn from `pattern`, keeping every
 * message alive (as queued requests do), and checks each frame's bin points
 * exactly where read() put its first byte. */
static void feed(const fm_mp_buf_t *s, int frames, const size_t *bin_off, const size_t *bin_size,
                 const size_t *pattern, int npattern) {
    fm_mp_reader_t *r;
    FM_REQUIRE_OK(fm_mp_reader_new(&lim, 64 * 1024, &r));
    write_rec_t *recs = malloc(sizeof(write_rec_t) * (s->len + 1));
    size_t nrecs = 0, pos = 0;
    fm_mp_msg_t **held = calloc((size_t)frames, sizeof *held);
    int got = 0, p = 0, bad_addr = 0, bad_bytes = 0;
    while (got < frames) {
        char *buf;
        size_t cap;
        FM_REQUIRE_OK(fm_mp_reader_buffer(r, &buf, &cap));
        FM_REQUIRE(cap > 0);
        size_t want = pattern[p++ % npattern];
        size_t n = want < cap ? want : cap;
        if (n > s->len - pos)
            n = s->len - pos;
        memcpy(buf, s->data + pos, n);
        recs[nrecs++] = (write_rec_t){pos, n, buf};
        pos += n;
        fm_mp_reader_consumed(r, n);
        for (;;) {
            fm_mp_msg_t *m;
            int rc = fm_mp_reader_next(r, &m);
            FM_REQUIRE(rc >= 0);
            if (rc == 0)
                break;
            uint64_t id;
            FM_REQUIRE_OK(fm_mp_get_u64(fm_mp_at(m->root, 1), &id));
            FM_REQUIRE(id == (uint64_t)got);
            size_t blen;
            const uint8_t *bin =
                fm_mp_get_bin(fm_mp_map_get(fm_mp_at(fm_mp_at(m->root, 3), 0), "images"), &blen);
            FM_REQUIRE(bin && blen == bin_size[got]);
            /* Where did read() put this frame's first payload byte? */
            char *expect = NULL;
            for (size_t k = 0; k < nrecs; k++)
                if (bin_off[got] >= recs[k].stream_off && bin_off[got] < recs[k].stream_off + recs[k].len)
                    expect = recs[k].addr + (bin_off[got] - recs[k].stream_off);
            if ((const char *)bin != expect)
                bad_addr++;
            if (memcmp(bin, s->data + bin_off[got], blen) != 0)
                bad_bytes++;
            held[got++] = m;
        }
    }
    FM_CHECK_EQ(bad_addr, 0);
    FM_CHECK_EQ(bad_bytes, 0);
    FM_CHECK_EQ(fm_mp_reader_pending(r), 0);
    /* Messages outlive the reader: they keep their buffer chunks alive. */
    fm_mp_reader_free(r);
    for (int f = 0; f < frames; f++) {
        size_t blen;
        const uint8_t *bin = fm_mp_get_bin(fm_mp_map_get(fm_mp_at(fm_mp_at(held[f]->root, 3), 0), "images"), &blen);
        if (memcmp(bin, s->data + bin_off[f], blen) != 0)
            bad_bytes++;
        fm_mp_msg_free(held[f]);
    }
    FM_CHECK_EQ(bad_bytes, 0);
    free(held);
    free(recs);
}

static void test_reader_never_moves_payloads(void) {
    fm_mp_buf_t s;
    fm_mp_buf_init(&s);
    size_t *off, *size;
    const int frames = 120;
    build_stream(&s, frames, &off, &size);
    static const size_t big[] = {1 << 20};
    static const size_t odd[] = {1, 7, 4096, 13, 100000, 3, 65536, 2};
    static const size_t small[] = {1, 2, 3};
    feed(&s, frames, off, size, big, 1);
    feed(&s, frames, off, size, odd, 8);
    feed(&s, 40, off, size, small, 3); /* byte by byte is slow: fewer frames */
    free(off);
    free(size);
    fm_mp_buf_free(&s);
}

/* Feeds `bytes` and expects a refusal code before more than `max_read`
 * bytes were asked for in total. */
static int refuse(const void *bytes, size_t len, int *have_msgid, uint64_t *msgid) {
    fm_mp_reader_t *r;
    if (fm_mp_reader_new(&lim, 64 * 1024, &r) != 0)
        return 1;
    char *buf;
    size_t cap;
    fm_mp_reader_buffer(r, &buf, &cap);
    memcpy(buf, bytes, len);
    fm_mp_reader_consumed(r, len);
    fm_mp_msg_t *m = NULL;
    int rc = fm_mp_reader_next(r, &m);
    *have_msgid = fm_mp_reader_frame_msgid(r, msgid);
    if (rc == 1)
        fm_mp_msg_free(m);
    fm_mp_reader_free(r);
    return rc;
}

static void test_limits_from_headers(void) {
    int have;
    uint64_t id;
    /* bin32 of 4 GiB: refused from the 5 header bytes. */
    FM_CHECK_ERR(refuse("\xc6\xff\xff\xff\xff", 5, &have, &id), FM_EINVAL);
    FM_CHECK_CONTAINS(fm_last_error(), "limit");
    /* array32 of 4 billion elements: refused before msgpack-c allocates. */
    FM_CHECK_ERR(refuse("\xdd\xff\xff\xff\xff", 5, &have, &id), FM_EINVAL);
    /* map32 likewise. */
    FM_CHECK_ERR(refuse("\xdf\x00\x10\x00\x00", 5, &have, &id), FM_EINVAL);
    /* More values than the limit, each tiny. */
    FM_CHECK_ERR(refuse("\xdc\x20\x00", 3, &have, &id), FM_EINVAL); /* array16 of 8192 > 4096 */
    /* Nested deeper than max_depth (8). */
    FM_CHECK_ERR(refuse("\x91\x91\x91\x91\x91\x91\x91\x91\x91\x01", 10, &have, &id), FM_EINVAL);
    FM_CHECK_CONTAINS(fm_last_error(), "deeper");
    /* Eight levels are fine. */
    FM_CHECK_EQ(refuse("\x91\x91\x91\x91\x91\x91\x91\x01", 8, &have, &id), 1);
    /* 0xc1 is never a msgpack type. */
    FM_CHECK_ERR(refuse("\xc1", 1, &have, &id), FM_EFORMAT);
    /* A request whose image bin is too large: refused, and the msgid is known
     * so the server can answer it. [0, 77, "predict", [{"images": bin32 2MiB}]] */
    static const uint8_t req[] = {0x94, 0x00, 0x4d, 0xa7, 'p', 'r', 'e', 'd', 'i', 'c', 't', 0x91, 0x81, 0xa6,
                                  'i',  'm',  'a',  'g',  'e', 's', 0xc6, 0x00, 0x20, 0x00, 0x00};
    FM_CHECK_ERR(refuse(req, sizeof req, &have, &id), FM_EINVAL);
    FM_CHECK_EQ(have, 1);
    FM_CHECK_EQ(id, 77);
    /* A notification has no msgid. */
    FM_CHECK_ERR(refuse("\x93\x02\xc6\xff\xff\xff\xff", 7, &have, &id), FM_EINVAL);
    FM_CHECK_EQ(have, 0);
    /* An incomplete but valid prefix just waits. */
    FM_CHECK_EQ(refuse("\x94\x00\x01", 3, &have, &id), 0);
    FM_CHECK_EQ(have, 1);
}

static void test_reader_after_error(void) {
    fm_mp_reader_t *r;
    FM_REQUIRE_OK(fm_mp_reader_new(&lim, 4096, &r));
    char *buf;
    size_t cap;
    FM_REQUIRE_OK(fm_mp_reader_buffer(r, &buf, &cap));
    memcpy(buf, "\xc1\x01", 2);
    fm_mp_reader_consumed(r, 2);
    fm_mp_msg_t *m;
    FM_CHECK_ERR(fm_mp_reader_next(r, &m), FM_EFORMAT);
    FM_CHECK(fm_mp_reader_next(r, &m) < 0);
    fm_mp_reader_free(r);
}

static void test_proto_roundtrip(void) {
    uint8_t px[2 * 784];
    for (int i = 0; i < 2 * 784; i++)
        px[i] = (uint8_t)i;
    fm_predict_opts_t o = {.version = "canary", .key = "user-7", .deadline_ms = 250, .probs = 1};
    fm_mp_buf_t b;
    fm_mp_buf_init(&b);
    fm_proto_pack_predict(&b, 9, px, 2, &o);
    fm_mp_msg_t *m;
    FM_REQUIRE_OK(fm_mp_decode(b.data, b.len, &lim, &m));
    const fm_mp_obj_t *root = m->root;
    FM_CHECK_EQ(fm_mp_len(root), 4);
    FM_CHECK(fm_mp_str_eq(fm_mp_at(root, 2), "predict"));
    const fm_mp_obj_t *p = fm_mp_at(fm_mp_at(root, 3), 0);
    size_t n;
    FM_CHECK(fm_mp_get_bin(fm_mp_map_get(p, "images"), &n) && n == 2 * 784);
    FM_CHECK(fm_mp_str_eq(fm_mp_map_get(p, "version"), "canary"));
    FM_CHECK(fm_mp_str_eq(fm_mp_map_get(p, "key"), "user-7"));
    fm_mp_msg_free(m);
    fm_mp_buf_free(&b);

    fm_mp_buf_init(&b);
    fm_proto_pack_error_response(&b, 5, FM_PROTO_OVERLOADED, "full");
    FM_REQUIRE_OK(fm_mp_decode(b.data, b.len, &lim, &m));
    uint64_t id;
    const fm_mp_obj_t *e, *r;
    FM_REQUIRE_OK(fm_proto_parse_response(m->root, &id, &e, &r));
    FM_CHECK_EQ(id, 5);
    fm_proto_error_t pe;
    fm_proto_read_error(e, &pe);
    FM_CHECK_STR(pe.code, "OVERLOADED");
    FM_CHECK_STR(pe.message, "full");
    FM_CHECK_EQ(pe.retryable, 1);
    FM_CHECK_EQ(fm_mp_type(r), FM_MP_NIL);
    fm_mp_msg_free(m);
    fm_mp_buf_free(&b);
}

FM_TEST_MAIN({"pack_and_view", test_pack_and_view}, {"reader_never_moves_payloads", test_reader_never_moves_payloads},
             {"limits_from_headers", test_limits_from_headers}, {"reader_after_error", test_reader_after_error},
             {"proto_roundtrip", test_proto_roundtrip})
