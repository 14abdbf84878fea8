/* fm_hdr.h: a high-dynamic-range histogram of non-negative integers (fmbench
 * records microseconds): every value is counted, none is sampled away, and a
 * percentile is reported with a bounded relative error whatever the range.
 *
 * Layout (the HdrHistogram idea in its simplest form): with precision p and
 * S = 2^p, values below 2S have a bucket each (exact); above, every power of
 * two [2^e, 2^(e+1)) is split into S equal buckets of width 2^(e-p). A
 * bucket's width is therefore at most 1/S of any value in it, so a reported
 * percentile v_rep and the exact one v satisfy v <= v_rep <= v * (1 + 2^-p).
 * Memory: 8 bytes x (S x (log2(max_value) - p + 1) + 1); p = 10 over
 * 1 µs .. 2^36 µs (19 hours) is 27,649 counters, 216 KiB.
 *
 * Ownership: fm_hdr_new allocates, fm_hdr_free frees. Not thread-safe: one
 * thread records into a histogram; merge with fm_hdr_add. */
#ifndef FM_HDR_H
#define FM_HDR_H

#include <stddef.h>
#include <stdint.h>

#define FM_HDR_MIN_PRECISION 1
#define FM_HDR_MAX_PRECISION 14

typedef struct fm_hdr fm_hdr_t;

/* A histogram with relative error at most 2^-precision_bits for values up to
 * max_value (at least 2^(precision_bits+1)). Larger values are counted in the
 * top bucket and in fm_hdr_overflow(); min, max and mean stay exact. Returns
 * 0, FM_EINVAL (bad precision or range) or FM_ENOMEM. */
int fm_hdr_new(int precision_bits, uint64_t max_value, fm_hdr_t **out);
void fm_hdr_free(fm_hdr_t *h);
/* Forgets every value (the layout stays). */
void fm_hdr_reset(fm_hdr_t *h);

void fm_hdr_record(fm_hdr_t *h, uint64_t value);
/* Records `value` `n` times. */
void fm_hdr_record_n(fm_hdr_t *h, uint64_t value, uint64_t n);
/* dst += src. Both must have the same precision and range (FM_EINVAL). */
int fm_hdr_add(fm_hdr_t *dst, const fm_hdr_t *src);

uint64_t fm_hdr_count(const fm_hdr_t *h);
/* Exact smallest and largest recorded values (0 when empty). */
uint64_t fm_hdr_min(const fm_hdr_t *h);
uint64_t fm_hdr_max(const fm_hdr_t *h);
/* Exact arithmetic mean (0 when empty). */
double fm_hdr_mean(const fm_hdr_t *h);
/* Values recorded above max_value. */
uint64_t fm_hdr_overflow(const fm_hdr_t *h);
/* The error bound 2^-precision_bits. */
double fm_hdr_relative_error(const fm_hdr_t *h);
/* Bytes of counters, for sizing. */
size_t fm_hdr_memory(const fm_hdr_t *h);

/* The nearest-rank percentile q in [0, 100]: the value of rank
 * ceil(q/100 * count) (at least 1) in sorted order, reported as the highest
 * value of its bucket, never above the recorded maximum. q <= 0 gives the
 * minimum, q >= 100 the maximum; 0 when empty. */
uint64_t fm_hdr_percentile(const fm_hdr_t *h, double q);

#endif /* FM_HDR_H */
