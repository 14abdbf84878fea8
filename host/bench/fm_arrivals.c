/* fm_arrivals.c: the PRNG and the two arrival processes of fm_arrivals.h. */
#include "fm_arrivals.h"

#include <math.h>
#include <string.h>

#include "fm_error.h"

const char *fm_arrivals_kind_name(fm_arrivals_kind_t k) { return k == FM_ARRIVALS_POISSON ? "poisson" : "constant"; }

int fm_arrivals_parse(const char *s, fm_arrivals_kind_t *out) {
    if (!strcmp(s, "constant") || !strcmp(s, "uniform")) {
        *out = FM_ARRIVALS_CONSTANT;
        return 0;
    }
    if (!strcmp(s, "poisson")) {
        *out = FM_ARRIVALS_POISSON;
        return 0;
    }
    return fm_fail(FM_EINVAL, "unknown arrival distribution '%s' (constant or poisson)", s);
}

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void fm_rng_seed(fm_rng_t *r, uint64_t seed) {
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t fm_rng_next(fm_rng_t *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double fm_rng_uniform_open0(fm_rng_t *r) {
    /* 53 random bits k give (k + 1) / 2^53 in (0, 1]. */
    return (double)((fm_rng_next(r) >> 11) + 1) * (1.0 / 9007199254740992.0);
}

int fm_arrivals_init(fm_arrivals_t *a, fm_arrivals_kind_t kind, double rate_per_s, uint64_t seed) {
    memset(a, 0, sizeof *a);
    if (!(rate_per_s > 0) || !isfinite(rate_per_s) || rate_per_s > 1e9)
        return fm_fail(FM_EINVAL, "arrival rate %g per second is outside (0, 1e9]", rate_per_s);
    if (kind != FM_ARRIVALS_CONSTANT && kind != FM_ARRIVALS_POISSON)
        return fm_fail(FM_EINVAL, "unknown arrival distribution %d", (int)kind);
    a->kind = kind;
    a->rate = rate_per_s;
    a->mean_gap = 1e9 / rate_per_s;
    fm_rng_seed(&a->rng, seed);
    return 0;
}

double fm_arrivals_gap(fm_arrivals_t *a) {
    if (a->kind == FM_ARRIVALS_CONSTANT)
        return a->mean_gap;
    /* Inverse transform: -ln(U) is exponential with mean 1 for U in (0, 1]. */
    return -log(fm_rng_uniform_open0(&a->rng)) * a->mean_gap;
}

double fm_arrivals_next(fm_arrivals_t *a) {
    a->t += fm_arrivals_gap(a);
    return a->t;
}
