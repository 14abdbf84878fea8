/* fm_uuid.c: UUID text, bytes and UUIDv7 construction (see fm_uuid.h). */
#include "fm_uuid.h"

#include <string.h>
#include <sys/random.h>

#include "fm_error.h"
#include "fm_time.h"

static int hexval(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int fm_uuid_parse_n(const char *text, unsigned long len, uint8_t out[FM_UUID_BYTES]) {
    if (!text || len != FM_UUID_TEXT_LEN)
        return fm_fail(FM_EINVAL, "a UUID is 36 characters (8-4-4-4-12 hex digits), got %lu", text ? len : 0ul);
    int k = 0;
    for (unsigned long i = 0; i < len;) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (text[i] != '-')
                return fm_fail(FM_EINVAL, "a UUID has '-' at positions 9, 14, 19 and 24");
            i++;
            continue;
        }
        int hi = hexval(text[i]), lo = hexval(text[i + 1]);
        if (hi < 0 || lo < 0)
            return fm_fail(FM_EINVAL, "a UUID holds hex digits only");
        out[k++] = (uint8_t)(hi << 4 | lo);
        i += 2;
    }
    return 0;
}

int fm_uuid_parse(const char *text, uint8_t out[FM_UUID_BYTES]) {
    return fm_uuid_parse_n(text, text ? (unsigned long)strlen(text) : 0ul, out);
}

void fm_uuid_format(const uint8_t id[FM_UUID_BYTES], char out[FM_UUID_TEXT_LEN + 1]) {
    static const char hx[] = "0123456789abcdef";
    int k = 0;
    for (int i = 0; i < FM_UUID_BYTES; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[k++] = '-';
        out[k++] = hx[id[i] >> 4];
        out[k++] = hx[id[i] & 15];
    }
    out[k] = '\0';
}

int64_t fm_uuid7_ms(const uint8_t id[FM_UUID_BYTES]) {
    int64_t ms = 0;
    for (int i = 0; i < 6; i++)
        ms = ms << 8 | id[i];
    return ms;
}

void fm_uuid7_make(int64_t unix_ms, uint16_t rand_a, uint64_t rand_b, uint8_t out[FM_UUID_BYTES]) {
    uint64_t ms = (uint64_t)unix_ms;
    for (int i = 0; i < 6; i++)
        out[i] = (uint8_t)(ms >> (40 - 8 * i));
    out[6] = (uint8_t)(0x70 | ((rand_a >> 8) & 0x0f));
    out[7] = (uint8_t)rand_a;
    out[8] = (uint8_t)(0x80 | ((rand_b >> 56) & 0x3f));
    for (int i = 9; i < 16; i++)
        out[i] = (uint8_t)(rand_b >> (8 * (15 - i)));
}

/* xoshiro-style state per thread, seeded from the kernel once. */
static _Thread_local uint64_t rng[2];
static _Thread_local int64_t last_ms;
static _Thread_local uint16_t seq;

static uint64_t next_rand(void) {
    if (!rng[0] && !rng[1]) {
        if (getrandom(rng, sizeof rng, 0) != (ssize_t)sizeof rng || (!rng[0] && !rng[1])) {
            rng[0] = (uint64_t)fm_now_ns() | 1;
            rng[1] = (uint64_t)fm_wall_us() ^ 0x9e3779b97f4a7c15ull;
        }
    }
    /* xorshift128+ */
    uint64_t s1 = rng[0];
    const uint64_t s0 = rng[1];
    rng[0] = s0;
    s1 ^= s1 << 23;
    rng[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return rng[1] + s0;
}

void fm_uuid7_new(uint8_t out[FM_UUID_BYTES]) {
    int64_t ms = fm_wall_us() / 1000;
    if (ms <= last_ms) {
        /* Same millisecond (or the clock stepped back): count up in rand_a
         * so this thread's ids keep increasing (RFC 9562, method 1). */
        ms = last_ms;
        if (++seq > 0xfff) {
            ms++;
            seq = 0;
        }
    } else {
        seq = (uint16_t)(next_rand() & 0x1ff);
    }
    last_ms = ms;
    fm_uuid7_make(ms, seq, next_rand(), out);
}
