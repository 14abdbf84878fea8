/* test_hdr.c: the HDR histogram against exact percentiles of sorted arrays,
 * over many distributions (heavy tails, microseconds to hours, constants,
 * exact small values), at several precisions; merging, overflow, limits. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "fm_arrivals.h"
#include "fm_hdr.h"
#include "fm_test.h"

/* Percentiles as exact fractions num/den so the reference rank is exact. */
static const struct {
    double q;
    uint64_t num, den;
} P[] = {{0.001, 1, 100000}, {1, 1, 100},       {10, 1, 10},         {25, 1, 4},          {50, 1, 2},
         {75, 3, 4},         {90, 9, 10},       {95, 19, 20},        {99, 99, 100},       {99.9, 999, 1000},
         {99.99, 9999, 10000}, {99.999, 99999, 100000}};

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest rank: the value of rank ceil(num/den * n) (at least 1). */
static uint64_t exact_percentile(const uint64_t *sorted, size_t n, uint64_t num, uint64_t den) {
    unsigned __int128 r = ((unsigned __int128)num * n + den - 1) / den;
    size_t rank = r < 1 ? 1 : (size_t)r;
    return sorted[rank - 1];
}

/* Records v[0..n) at every precision in `bits` and checks each percentile
 * v_exact <= v_reported <= v_exact * (1 + 2^-p), plus count/min/max/mean. */
static void check_distribution(const char *name, uint64_t *v, size_t n, uint64_t max_value) {
    static const int bits[] = {3, 7, 10, 14};
    long double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += v[i];
    uint64_t *sorted = malloc(n * sizeof *sorted);
    FM_REQUIRE(sorted);
    memcpy(sorted, v, n * sizeof *v);
    qsort(sorted, n, sizeof *sorted, cmp_u64);
    for (size_t b = 0; b < sizeof bits / sizeof bits[0]; b++) {
        fm_hdr_t *h;
        FM_REQUIRE_OK(fm_hdr_new(bits[b], max_value, &h));
        for (size_t i = 0; i < n; i++)
            fm_hdr_record(h, v[i]);
        FM_CHECK_EQ(fm_hdr_count(h), n);
        FM_CHECK_EQ(fm_hdr_min(h), sorted[0]);
        FM_CHECK_EQ(fm_hdr_max(h), sorted[n - 1]);
        FM_CHECK_NEAR(fm_hdr_mean(h), (double)(sum / n), 1e-9 * (double)(sum / n) + 1e-9);
        FM_CHECK_EQ(fm_hdr_percentile(h, 0), sorted[0]);
        FM_CHECK_EQ(fm_hdr_percentile(h, 100), sorted[n - 1]);
        int bad = 0;
        for (size_t k = 0; k < sizeof P / sizeof P[0]; k++) {
            uint64_t want = exact_percentile(sorted, n, P[k].num, P[k].den);
            uint64_t got = fm_hdr_percentile(h, P[k].q);
            /* got - want <= want / 2^p, in integers. */
            int ok = got >= want && (got - want) <= (want >> bits[b]);
            if (!ok && bad++ < 3)
                FM_TEST_FAIL_AT("%s, %d bits: p%g is %llu, exact %llu (bound +%llu)", name, bits[b], P[k].q,
                                (unsigned long long)got, (unsigned long long)want,
                                (unsigned long long)(want >> bits[b]));
        }
        fm_hdr_free(h);
    }
    free(sorted);
}

#define N 200000
#define MAXV ((uint64_t)1 << 36)

static uint64_t clampv(double x) {
    if (!(x >= 0))
        return 0;
    if (x >= (double)MAXV)
        return MAXV;
    return (uint64_t)x;
}

static double normal(fm_rng_t *r) {
    double u1 = fm_rng_uniform_open0(r), u2 = fm_rng_uniform_open0(r);
    return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}

static void test_distributions(void) {
    uint64_t *v = malloc(N * sizeof *v);
    FM_REQUIRE(v);
    fm_rng_t r;
    fm_rng_seed(&r, 12345);

    for (size_t i = 0; i < N; i++)
        v[i] = 1 + fm_rng_next(&r) % 1000000;
    check_distribution("uniform 1..1e6", v, N, MAXV);

    for (size_t i = 0; i < N; i++)
        v[i] = clampv(-log(fm_rng_uniform_open0(&r)) * 1000);
    check_distribution("exponential mean 1000", v, N, MAXV);

    for (size_t i = 0; i < N; i++)
        v[i] = clampv(exp(5 + 2.5 * normal(&r)));
    check_distribution("lognormal sigma 2.5 (heavy tail)", v, N, MAXV);

    for (size_t i = 0; i < N; i++)
        v[i] = clampv(50 * pow(fm_rng_uniform_open0(&r), -1 / 1.1));
    check_distribution("pareto alpha 1.1 (heavy tail)", v, N, MAXV);

    for (size_t i = 0; i < N; i++)
        v[i] = fm_rng_next(&r) % 10 ? 80 + fm_rng_next(&r) % 40 : 50000 + fm_rng_next(&r) % 20000;
    check_distribution("bimodal 100 us / 60 ms", v, N, MAXV);

    /* Log-uniform from 1 µs to 10 minutes: every octave of the range. */
    for (size_t i = 0; i < N; i++)
        v[i] = clampv(exp(fm_rng_uniform_open0(&r) * log(6e8)));
    check_distribution("log-uniform 1 us .. 10 min", v, N, MAXV);

    for (size_t i = 0; i < N; i++)
        v[i] = 777;
    check_distribution("constant 777", v, N, MAXV);

    for (size_t i = 0; i < 5; i++)
        v[i] = (uint64_t)(i * 1000003 + 17);
    check_distribution("five values", v, 5, MAXV);
    v[0] = 42;
    check_distribution("one value", v, 1, MAXV);

    /* Values at and just around powers of two, where buckets change width. */
    size_t n = 0;
    for (int e = 0; e < 36 && n + 3 <= N; e++) {
        uint64_t p2 = (uint64_t)1 << e;
        v[n++] = p2 - 1;
        v[n++] = p2;
        v[n++] = p2 + 1;
    }
    check_distribution("powers of two +-1", v, n, MAXV);
    free(v);
}

static void test_exact_small_values(void) {
    /* Below 2^(p+1) every value has its own bucket: percentiles are exact. */
    fm_hdr_t *h;
    FM_REQUIRE_OK(fm_hdr_new(7, 1u << 20, &h));
    for (uint64_t x = 0; x < 256; x++)
        fm_hdr_record_n(h, x, x + 1);
    uint64_t total = 256 * 257 / 2;
    FM_CHECK_EQ(fm_hdr_count(h), total);
    /* The value of rank k is the x with x(x+1)/2 < k <= (x+1)(x+2)/2. */
    for (uint64_t q = 1; q <= 100; q++) {
        uint64_t rank = (q * total + 99) / 100, x = 0;
        while ((x + 1) * (x + 2) / 2 < rank)
            x++;
        FM_CHECK_EQ(fm_hdr_percentile(h, (double)q), x);
    }
    fm_hdr_free(h);
}

static void test_merge_equals_whole(void) {
    fm_hdr_t *a, *b, *all;
    FM_REQUIRE_OK(fm_hdr_new(10, MAXV, &a));
    FM_REQUIRE_OK(fm_hdr_new(10, MAXV, &b));
    FM_REQUIRE_OK(fm_hdr_new(10, MAXV, &all));
    fm_rng_t r;
    fm_rng_seed(&r, 99);
    for (int i = 0; i < 100000; i++) {
        uint64_t x = clampv(exp(3 + 3 * normal(&r)));
        fm_hdr_record(i % 3 ? a : b, x);
        fm_hdr_record(all, x);
    }
    FM_CHECK_OK(fm_hdr_add(a, b));
    FM_CHECK_EQ(fm_hdr_count(a), fm_hdr_count(all));
    FM_CHECK_EQ(fm_hdr_min(a), fm_hdr_min(all));
    FM_CHECK_EQ(fm_hdr_max(a), fm_hdr_max(all));
    FM_CHECK_NEAR(fm_hdr_mean(a), fm_hdr_mean(all), 1e-9 * fm_hdr_mean(all));
    for (double q = 0; q <= 100; q += 0.5)
        FM_CHECK_EQ(fm_hdr_percentile(a, q), fm_hdr_percentile(all, q));
    /* Merging into an empty histogram copies; an empty source changes nothing. */
    fm_hdr_reset(b);
    FM_CHECK_EQ(fm_hdr_count(b), 0);
    FM_CHECK_EQ(fm_hdr_percentile(b, 50), 0);
    FM_CHECK_OK(fm_hdr_add(b, all));
    FM_CHECK_EQ(fm_hdr_percentile(b, 99.9), fm_hdr_percentile(all, 99.9));
    fm_hdr_t *other;
    FM_REQUIRE_OK(fm_hdr_new(9, MAXV, &other));
    FM_CHECK_ERR(fm_hdr_add(a, other), FM_EINVAL);
    fm_hdr_free(other);
    fm_hdr_free(a);
    fm_hdr_free(b);
    fm_hdr_free(all);
}

static void test_overflow_and_limits(void) {
    fm_hdr_t *h;
    FM_REQUIRE_OK(fm_hdr_new(10, 1000000, &h));
    fm_hdr_record(h, 5);
    fm_hdr_record(h, 2000000);
    fm_hdr_record(h, UINT64_MAX / 4);
    FM_CHECK_EQ(fm_hdr_overflow(h), 2);
    FM_CHECK_EQ(fm_hdr_count(h), 3);
    FM_CHECK_EQ(fm_hdr_max(h), UINT64_MAX / 4);
    FM_CHECK_EQ(fm_hdr_percentile(h, 100), UINT64_MAX / 4);
    FM_CHECK_EQ(fm_hdr_percentile(h, 10), 5);
    /* An overflowed value is reported at least at the top of the range. */
    FM_CHECK(fm_hdr_percentile(h, 60) >= 1000000);
    FM_CHECK_NEAR(fm_hdr_relative_error(h), 1.0 / 1024, 1e-15);
    FM_CHECK(fm_hdr_memory(h) < 200 * 1024);
    fm_hdr_free(h);
    FM_CHECK_ERR(fm_hdr_new(0, 1000, &h), FM_EINVAL);
    FM_CHECK_ERR(fm_hdr_new(15, 1u << 30, &h), FM_EINVAL);
    FM_CHECK_ERR(fm_hdr_new(10, 100, &h), FM_EINVAL);
    FM_CHECK(h == NULL);
    /* The range the benchmark uses: 0.1 % over 1 µs .. 2^36 µs in < 256 KiB. */
    FM_REQUIRE_OK(fm_hdr_new(10, (uint64_t)1 << 36, &h));
    FM_CHECK(fm_hdr_memory(h) <= 256 * 1024);
    fm_hdr_free(h);
}

FM_TEST_MAIN({"distributions", test_distributions}, {"exact_small_values", test_exact_small_values},
             {"merge_equals_whole", test_merge_equals_whole}, {"overflow_and_limits", test_overflow_and_limits})
