/* fm_router.c: which model version serves a request (pin, sticky key, or
 * the A/B draw) and the time-ordered request ids. */
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "fm_error.h"
#include "fm_hash.h"
#include "fm_server_int.h"
#include "fm_time.h"

const char *fm_route_name(fm_route_t r) {
    static const char *const names[] = {"ab", "sticky", "pinned"};
    return (unsigned)r < FM_NROUTES ? names[r] : "?";
}

const char *fm_role_name(fm_role_t role) { return role == FM_ROLE_CANARY ? "canary" : "stable"; }

/* xorshift128+: fast, good enough for a traffic split, seeded from the
 * kernel so replicas do not draw in lockstep. */
uint64_t fm_server_rand(fm_server_t *srv) {
    if (!srv->rng[0] && !srv->rng[1]) {
        if (getrandom(srv->rng, sizeof srv->rng, 0) != (ssize_t)sizeof srv->rng || (!srv->rng[0] && !srv->rng[1])) {
            srv->rng[0] = fm_now_ns() | 1;
            srv->rng[1] = (uint64_t)fm_wall_us() * 0x9e3779b97f4a7c15ull;
        }
    }
    uint64_t s1 = srv->rng[0];
    const uint64_t s0 = srv->rng[1];
    srv->rng[0] = s0;
    s1 ^= s1 << 23;
    srv->rng[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return srv->rng[1] + s0;
}

double fm_route_key_point(const char *key, size_t len) {
    char hex[FM_SHA256_HEX_LEN + 1];
    fm_sha256_hex(key, len, hex);
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char c = hex[i];
        v = (v << 4) | (uint64_t)(c <= '9' ? c - '0' : c - 'a' + 10);
    }
    return (double)v / 18446744073709551616.0; /* 2^64 */
}

static int pin_is(const char *pin, size_t len, const char *s) { return strlen(s) == len && memcmp(pin, s, len) == 0; }

int fm_route(fm_server_t *srv, const char *pin, size_t pin_len, const char *key, size_t key_len, fm_slot_t **slot,
             fm_route_t *route, char *why, size_t why_cap) {
    fm_slot_t *stable = srv->active[FM_ROLE_STABLE], *canary = srv->active[FM_ROLE_CANARY];
    *slot = NULL;
    if (pin) {
        *route = FM_ROUTE_PINNED;
        if (pin_is(pin, pin_len, "stable"))
            *slot = stable;
        else if (pin_is(pin, pin_len, "canary"))
            *slot = canary;
        else if (stable && pin_is(pin, pin_len, stable->version))
            *slot = stable;
        else if (canary && pin_is(pin, pin_len, canary->version))
            *slot = canary;
        if (!*slot) {
            snprintf(why, why_cap, "no loaded model version matches '%.*s' (loaded: stable %s, canary %s)",
                     (int)(pin_len > 64 ? 64 : pin_len), pin, stable ? stable->version : "none",
                     canary ? canary->version : "none");
            return FM_ENOTFOUND;
        }
        return 0;
    }
    if (!stable) {
        snprintf(why, why_cap, "no stable model is loaded");
        return FM_EUNAVAILABLE;
    }
    double ratio = canary ? srv->ab_ratio : 0.0;
    double u;
    if (key) {
        *route = FM_ROUTE_STICKY;
        u = fm_route_key_point(key, key_len);
    } else {
        *route = FM_ROUTE_AB;
        u = (double)(fm_server_rand(srv) >> 11) * (1.0 / 9007199254740992.0); /* 53 bits -> [0, 1) */
    }
    *slot = u < ratio ? canary : stable;
    return 0;
}

void fm_uuid7(fm_server_t *srv, char out[40]) {
    /* 48-bit Unix milliseconds, then a 12-bit sequence in rand_a that makes
     * ids strictly increasing within a millisecond (RFC 9562, method 1),
     * then 62 random bits. */
    uint64_t ms = (uint64_t)fm_wall_us() / 1000;
    if (ms <= srv->uuid_last_ms) {
        ms = srv->uuid_last_ms;
        if (++srv->uuid_seq > 0xfff) {
            ms++;
            srv->uuid_seq = 0;
        }
    } else {
        srv->uuid_seq = (uint32_t)(fm_server_rand(srv) & 0x1ff); /* leave room to count up */
    }
    srv->uuid_last_ms = ms;
    uint64_t r = fm_server_rand(srv);
    uint8_t b[16];
    for (int i = 0; i < 6; i++)
        b[i] = (uint8_t)(ms >> (40 - 8 * i));
    b[6] = (uint8_t)(0x70 | ((srv->uuid_seq >> 8) & 0x0f));
    b[7] = (uint8_t)(srv->uuid_seq & 0xff);
    b[8] = (uint8_t)(0x80 | ((r >> 56) & 0x3f));
    for (int i = 9; i < 16; i++)
        b[i] = (uint8_t)(r >> (8 * (15 - i)));
    static const char hx[] = "0123456789abcdef";
    int k = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[k++] = '-';
        out[k++] = hx[b[i] >> 4];
        out[k++] = hx[b[i] & 15];
    }
    out[k] = '\0';
}
