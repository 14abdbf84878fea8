/* fm_arrivals.h: request schedules for open-loop load: constant spacing or
 * a Poisson process (exponential gaps), from a seeded PRNG so that a run's
 * schedule can be reproduced.
 *
 * Times are nanoseconds from the start of the schedule, kept in a double so
 * that sub-nanosecond parts of the gaps are not lost to rounding over
 * millions of arrivals (exact to 2^53 ns, about 104 days). */
#ifndef FM_ARRIVALS_H
#define FM_ARRIVALS_H

#include <stdint.h>

typedef enum { FM_ARRIVALS_CONSTANT = 0, FM_ARRIVALS_POISSON = 1 } fm_arrivals_kind_t;

/* "constant" / "poisson". */
const char *fm_arrivals_kind_name(fm_arrivals_kind_t k);
/* Parses a kind name; FM_EINVAL (with detail) otherwise. */
int fm_arrivals_parse(const char *s, fm_arrivals_kind_t *out);

/* xoshiro256**: small, fast, good statistical quality, seedable. */
typedef struct fm_rng {
    uint64_t s[4];
} fm_rng_t;

/* Seeds from one 64-bit value (expanded with splitmix64; any seed is fine). */
void fm_rng_seed(fm_rng_t *r, uint64_t seed);
uint64_t fm_rng_next(fm_rng_t *r);
/* Uniform in (0, 1]: never 0, so -log(u) is finite. */
double fm_rng_uniform_open0(fm_rng_t *r);

typedef struct fm_arrivals {
    fm_arrivals_kind_t kind;
    double rate;     /* arrivals per second */
    double mean_gap; /* ns */
    double t;        /* ns: time of the last arrival handed out */
    fm_rng_t rng;
} fm_arrivals_t;

/* A schedule starting at 0 with `rate` arrivals per second (> 0). The first
 * arrival comes one gap after 0 (a Poisson process has no arrival at its
 * origin). Returns 0 or FM_EINVAL. */
int fm_arrivals_init(fm_arrivals_t *a, fm_arrivals_kind_t kind, double rate_per_s, uint64_t seed);
/* The next gap in ns (constant: 1e9/rate; Poisson: exponential with that mean). */
double fm_arrivals_gap(fm_arrivals_t *a);
/* Advances by one gap and returns the new arrival time in ns. */
double fm_arrivals_next(fm_arrivals_t *a);

#endif /* FM_ARRIVALS_H */
