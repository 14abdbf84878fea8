/* test_arrivals.c: the open-loop schedules. Poisson gaps have the mean and
 * variance of an exponential distribution, pass a Kolmogorov-Smirnov test
 * against it, and give counts per interval with variance equal to their mean;
 * constant gaps are exact; seeds reproduce. Bounds are 5 standard errors on
 * fixed seeds, so a pass is deterministic and a biased generator fails. */
#include <math.h>
#include <stdlib.h>

#include "fm_arrivals.h"
#include "fm_test.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void test_poisson_mean_and_variance(void) {
    const double rates[] = {1.0, 1000.0, 250000.0};
    for (size_t ri = 0; ri < 3; ri++)
        for (uint64_t seed = 1; seed <= 3; seed++) {
            fm_arrivals_t a;
            FM_REQUIRE_OK(fm_arrivals_init(&a, FM_ARRIVALS_POISSON, rates[ri], seed));
            const size_t n = 1000000;
            double mean_gap = 1e9 / rates[ri], sum = 0, sum2 = 0, prev = 0;
            for (size_t i = 0; i < n; i++) {
                double t = fm_arrivals_next(&a);
                double g = t - prev;
                prev = t;
                FM_CHECK(g > 0);
                sum += g / mean_gap;
                sum2 += (g / mean_gap) * (g / mean_gap);
            }
            double m = sum / (double)n, var = sum2 / (double)n - m * m;
            /* Exponential(1): mean 1 (standard error 1/sqrt(n)); variance 1
             * (standard error sqrt(8/n), the fourth central moment being 9). */
            FM_CHECK_NEAR(m, 1.0, 5 / sqrt((double)n));
            FM_CHECK_NEAR(var, 1.0, 5 * sqrt(8.0 / (double)n));
            /* The schedule's time is the sum of the gaps: rate * t / n ~ 1. */
            FM_CHECK_NEAR(a.t / 1e9 * rates[ri] / (double)n, 1.0, 5 / sqrt((double)n));
        }
}

static void test_poisson_gap_distribution(void) {
    /* Kolmogorov-Smirnov against 1 - exp(-x): sqrt(n) * D below 1.95
     * (the 0.1 % critical value). */
    for (uint64_t seed = 7; seed <= 9; seed++) {
        fm_arrivals_t a;
        FM_REQUIRE_OK(fm_arrivals_init(&a, FM_ARRIVALS_POISSON, 500.0, seed));
        const size_t n = 200000;
        double *g = malloc(n * sizeof *g);
        FM_REQUIRE(g);
        for (size_t i = 0; i < n; i++)
            g[i] = fm_arrivals_gap(&a) / a.mean_gap;
        qsort(g, n, sizeof *g, cmp_double);
        double d = 0;
        for (size_t i = 0; i < n; i++) {
            double cdf = 1 - exp(-g[i]);
            double lo = cdf - (double)i / (double)n, hi = (double)(i + 1) / (double)n - cdf;
            d = fmax(d, fmax(lo, hi));
        }
        FM_CHECK(sqrt((double)n) * d < 1.95);
        if (!(sqrt((double)n) * d < 1.95))
            fprintf(stderr, "  seed %llu: KS statistic %.3f\n", (unsigned long long)seed, sqrt((double)n) * d);
        /* Memorylessness in the tail: P(g > 3) = e^-3 within 5 standard errors. */
        size_t above = 0;
        for (size_t i = 0; i < n; i++)
            above += g[i] > 3;
        double p = exp(-3), se = sqrt(p * (1 - p) / (double)n);
        FM_CHECK_NEAR((double)above / (double)n, p, 5 * se);
        free(g);
    }
}

static void test_poisson_counts(void) {
    /* Arrivals in consecutive 10 ms intervals at 1000/s: Poisson(10), so the
     * counts' mean and variance are both 10 (index of dispersion 1). */
    fm_arrivals_t a;
    FM_REQUIRE_OK(fm_arrivals_init(&a, FM_ARRIVALS_POISSON, 1000.0, 42));
    const size_t k = 100000;
    const double width = 10e6; /* ns */
    unsigned *count = calloc(k, sizeof *count);
    FM_REQUIRE(count);
    for (;;) {
        double t = fm_arrivals_next(&a);
        size_t i = (size_t)(t / width);
        if (i >= k)
            break;
        count[i]++;
    }
    double sum = 0, sum2 = 0;
    for (size_t i = 0; i < k; i++) {
        sum += count[i];
        sum2 += (double)count[i] * count[i];
    }
    double m = sum / (double)k, var = sum2 / (double)k - m * m;
    FM_CHECK_NEAR(m, 10.0, 5 * sqrt(10.0 / (double)k));
    /* Var of the sample variance of Poisson(l): (l + 2 l^2) / k. */
    FM_CHECK_NEAR(var, 10.0, 5 * sqrt((10.0 + 2 * 100.0) / (double)k));
    /* P(count = 0) = e^-10. */
    size_t zeros = 0;
    for (size_t i = 0; i < k; i++)
        zeros += count[i] == 0;
    FM_CHECK(zeros < 40); /* expected 4.5 */
    free(count);
}

static void test_constant(void) {
    fm_arrivals_t a;
    FM_REQUIRE_OK(fm_arrivals_init(&a, FM_ARRIVALS_CONSTANT, 3000.0, 1));
    double gap = 1e9 / 3000.0;
    for (int i = 1; i <= 3000000; i++) {
        double t = fm_arrivals_next(&a);
        if (fabs(t - gap * i) > 1e-6 * gap * i) {
            FM_TEST_FAIL_AT("arrival %d at %.3f ns, expected %.3f", i, t, gap * i);
            break;
        }
    }
    /* A second of schedule holds exactly `rate` arrivals. */
    FM_REQUIRE_OK(fm_arrivals_init(&a, FM_ARRIVALS_CONSTANT, 250.0, 1));
    int n = 0;
    while (fm_arrivals_next(&a) <= 1e9 + 1)
        n++;
    FM_CHECK_EQ(n, 250);
}

static void test_seeds_and_rng(void) {
    fm_arrivals_t a, b, c;
    FM_REQUIRE_OK(fm_arrivals_init(&a, FM_ARRIVALS_POISSON, 100.0, 5));
    FM_REQUIRE_OK(fm_arrivals_init(&b, FM_ARRIVALS_POISSON, 100.0, 5));
    FM_REQUIRE_OK(fm_arrivals_init(&c, FM_ARRIVALS_POISSON, 100.0, 6));
    int same = 1, differs = 0;
    for (int i = 0; i < 1000; i++) {
        double x = fm_arrivals_next(&a), y = fm_arrivals_next(&b), z = fm_arrivals_next(&c);
        same &= x == y;
        differs |= x != z;
    }
    FM_CHECK(same);
    FM_CHECK(differs);
    /* Uniforms lie in (0, 1] with mean 1/2. */
    fm_rng_t r;
    fm_rng_seed(&r, 0);
    double sum = 0;
    int out = 0;
    for (int i = 0; i < 1000000; i++) {
        double u = fm_rng_uniform_open0(&r);
        out += !(u > 0 && u <= 1);
        sum += u;
    }
    FM_CHECK_EQ(out, 0);
    FM_CHECK_NEAR(sum / 1e6, 0.5, 5 * sqrt(1.0 / 12 / 1e6));
}

static void test_bad_input(void) {
    fm_arrivals_t a;
    FM_CHECK_ERR(fm_arrivals_init(&a, FM_ARRIVALS_POISSON, 0, 1), FM_EINVAL);
    FM_CHECK_ERR(fm_arrivals_init(&a, FM_ARRIVALS_POISSON, -5, 1), FM_EINVAL);
    FM_CHECK_ERR(fm_arrivals_init(&a, FM_ARRIVALS_CONSTANT, NAN, 1), FM_EINVAL);
    FM_CHECK_ERR(fm_arrivals_init(&a, FM_ARRIVALS_CONSTANT, INFINITY, 1), FM_EINVAL);
    FM_CHECK_ERR(fm_arrivals_init(&a, (fm_arrivals_kind_t)7, 10, 1), FM_EINVAL);
    fm_arrivals_kind_t k;
    FM_CHECK_OK(fm_arrivals_parse("poisson", &k));
    FM_CHECK_EQ(k, FM_ARRIVALS_POISSON);
    FM_CHECK_OK(fm_arrivals_parse("constant", &k));
    FM_CHECK_EQ(k, FM_ARRIVALS_CONSTANT);
    FM_CHECK_ERR(fm_arrivals_parse("gamma", &k), FM_EINVAL);
    FM_CHECK_CONTAINS(fm_last_error(), "gamma");
    FM_CHECK_STR(fm_arrivals_kind_name(FM_ARRIVALS_POISSON), "poisson");
}

FM_TEST_MAIN({"poisson_mean_and_variance", test_poisson_mean_and_variance},
             {"poisson_gap_distribution", test_poisson_gap_distribution}, {"poisson_counts", test_poisson_counts},
             {"constant", test_constant}, {"seeds_and_rng", test_seeds_and_rng}, {"bad_input", test_bad_input})
