/* fm_hdr.c: the log-linear bucket layout of fm_hdr.h, recording, merging
 * and nearest-rank percentiles. */
#include "fm_hdr.h"

#include <stdlib.h>
#include <string.h>

#include "fm_error.h"

struct fm_hdr {
    int p;              /* precision bits */
    uint64_t max_value; /* largest value with its own bucket */
    size_t nbuckets;
    uint64_t count, overflow, min, max;
    /* Sum of values; a long double keeps it exact far past 2^64 for the
     * microsecond latencies recorded here (64-bit mantissa on x86-64). */
    long double sum;
    uint64_t counts[];
};

static inline int floor_log2(uint64_t v) { return 63 - __builtin_clzll(v); }

static inline size_t bucket_of(int p, uint64_t v) {
    uint64_t s = (uint64_t)1 << p;
    if (v < 2 * s)
        return (size_t)v;
    int shift = floor_log2(v) - p;
    return (size_t)((uint64_t)shift * s + (v >> shift));
}

/* Highest value that lands in bucket `b`. */
static inline uint64_t bucket_high(int p, size_t b) {
    uint64_t s = (uint64_t)1 << p;
    if (b < 2 * s)
        return (uint64_t)b;
    uint64_t shift = (uint64_t)b / s - 1;
    uint64_t m = (uint64_t)b - shift * s;
    return ((m + 1) << shift) - 1;
}

int fm_hdr_new(int precision_bits, uint64_t max_value, fm_hdr_t **out) {
    *out = NULL;
    if (precision_bits < FM_HDR_MIN_PRECISION || precision_bits > FM_HDR_MAX_PRECISION)
        return fm_fail(FM_EINVAL, "histogram precision %d bits is outside %d..%d", precision_bits,
                       FM_HDR_MIN_PRECISION, FM_HDR_MAX_PRECISION);
    if (max_value < ((uint64_t)2 << precision_bits) || max_value > ((uint64_t)1 << 62))
        return fm_fail(FM_EINVAL, "histogram range up to %llu is outside 2^%d..2^62", (unsigned long long)max_value,
                       precision_bits + 1);
    size_t n = bucket_of(precision_bits, max_value) + 1;
    fm_hdr_t *h = calloc(1, sizeof *h + n * sizeof h->counts[0]);
    if (!h)
        return fm_fail(FM_ENOMEM, "histogram of %zu buckets", n);
    h->p = precision_bits;
    h->max_value = max_value;
    h->nbuckets = n;
    *out = h;
    return 0;
}

void fm_hdr_free(fm_hdr_t *h) { free(h); }

void fm_hdr_reset(fm_hdr_t *h) {
    memset(h->counts, 0, h->nbuckets * sizeof h->counts[0]);
    h->count = h->overflow = h->min = h->max = 0;
    h->sum = 0;
}

void fm_hdr_record_n(fm_hdr_t *h, uint64_t v, uint64_t n) {
    if (n == 0)
        return;
    if (h->count == 0 || v < h->min)
        h->min = v;
    if (h->count == 0 || v > h->max)
        h->max = v;
    size_t b;
    if (v > h->max_value) {
        b = h->nbuckets - 1;
        h->overflow += n;
    } else {
        b = bucket_of(h->p, v);
    }
    h->counts[b] += n;
    h->count += n;
    h->sum += (long double)v * (long double)n;
}

void fm_hdr_record(fm_hdr_t *h, uint64_t v) { fm_hdr_record_n(h, v, 1); }

int fm_hdr_add(fm_hdr_t *dst, const fm_hdr_t *src) {
    if (dst->p != src->p || dst->max_value != src->max_value)
        return fm_fail(FM_EINVAL, "histograms differ in layout (precision %d/%d, range %llu/%llu)", dst->p, src->p,
                       (unsigned long long)dst->max_value, (unsigned long long)src->max_value);
    if (src->count == 0)
        return 0;
    for (size_t i = 0; i < dst->nbuckets; i++)
        dst->counts[i] += src->counts[i];
    if (dst->count == 0 || src->min < dst->min)
        dst->min = src->min;
    if (dst->count == 0 || src->max > dst->max)
        dst->max = src->max;
    dst->count += src->count;
    dst->overflow += src->overflow;
    dst->sum += src->sum;
    return 0;
}

uint64_t fm_hdr_count(const fm_hdr_t *h) { return h->count; }
uint64_t fm_hdr_min(const fm_hdr_t *h) { return h->min; }
uint64_t fm_hdr_max(const fm_hdr_t *h) { return h->max; }
uint64_t fm_hdr_overflow(const fm_hdr_t *h) { return h->overflow; }
double fm_hdr_mean(const fm_hdr_t *h) { return h->count ? (double)(h->sum / (long double)h->count) : 0.0; }
double fm_hdr_relative_error(const fm_hdr_t *h) { return 1.0 / (double)((uint64_t)1 << h->p); }
size_t fm_hdr_memory(const fm_hdr_t *h) { return h->nbuckets * sizeof h->counts[0]; }

uint64_t fm_hdr_percentile(const fm_hdr_t *h, double q) {
    if (h->count == 0)
        return 0;
    if (!(q > 0)) /* also NaN */
        return h->min;
    if (q >= 100)
        return h->max;
    /* Nearest rank: the smallest value with at least q % of the values at
     * or below it. The small epsilon keeps q = 99.9 of 1000 values at rank
     * 999 although 99.9 / 100 * 1000 is 999.0000000000001 in doubles. */
    double exact = q / 100.0 * (double)h->count;
    uint64_t rank = (uint64_t)exact;
    if ((double)rank < exact - 1e-9 * exact)
        rank++;
    if (rank < 1)
        rank = 1;
    if (rank > h->count)
        rank = h->count;
    uint64_t seen = 0;
    for (size_t b = 0; b < h->nbuckets; b++) {
        seen += h->counts[b];
        if (seen >= rank) {
            uint64_t v = bucket_high(h->p, b);
            if (v > h->max)
                v = h->max;
            if (v < h->min)
                v = h->min;
            return v;
        }
    }
    return h->max;
}
