/* fm_rng.h: the trainer's random numbers (xoshiro256** seeded through
 * splitmix64). Every random decision in training (initial weights, the
 * validation split, shuffles, dropout masks, augmentation) draws from a stream
 * derived from the run's seed and a fixed stream id, in a fixed order, so a
 * run is reproducible bit for bit. */
#ifndef FM_RNG_H
#define FM_RNG_H

#include <stdint.h>

typedef struct fm_rng {
    uint64_t s[4];
} fm_rng_t;

/* Stream ids: separate streams keep, e.g., the shuffle order unchanged when
 * dropout is switched on. */
enum { FM_RNG_INIT = 1, FM_RNG_SPLIT = 2, FM_RNG_SHUFFLE = 3, FM_RNG_DROPOUT = 4, FM_RNG_AUGMENT = 5 };

static inline uint64_t fm_rng_splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline void fm_rng_seed(fm_rng_t *r, uint64_t seed, uint64_t stream) {
    uint64_t x = seed ^ (stream * 0xd1b54a32d192ed03ull);
    for (int i = 0; i < 4; i++)
        r->s[i] = fm_rng_splitmix(&x);
}

static inline uint64_t fm_rng_next(fm_rng_t *r) {
    uint64_t *s = r->s;
    uint64_t t = s[1] * 5;
    uint64_t out = ((t << 7) | (t >> 57)) * 9;
    t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = (s[3] << 45) | (s[3] >> 19);
    return out;
}

/* Uniform in [0, 1) with 53 random bits. */
static inline double fm_rng_uniform(fm_rng_t *r) { return (double)(fm_rng_next(r) >> 11) * (1.0 / 9007199254740992.0); }

/* Uniform integer in [0, n), n > 0, without modulo bias (Lemire's method). */
static inline uint64_t fm_rng_below(fm_rng_t *r, uint64_t n) {
    __uint128_t m = (__uint128_t)fm_rng_next(r) * n;
    uint64_t lo = (uint64_t)m;
    if (lo < n) {
        uint64_t thresh = -n % n;
        while (lo < thresh) {
            m = (__uint128_t)fm_rng_next(r) * n;
            lo = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

#endif /* FM_RNG_H */
