/* test_bench_acc.c: fmbench's stability rule and the merging of its
 * accumulators (histograms, errors by code, per-version figures). */
#include "fm_test.h"
#include "fmb.h"

static void test_stability_rule(void) {
    double rps[] = {50, 100, 101, 99, 130, 100};
    double p99[] = {9, 10, 10.4, 10, 10, 30};
    /* Windows 1..3 (100, 101, 99; 10, 10.4, 10): within 10 %. */
    FM_CHECK(fmb_stable(rps, p99, 4, 3, 10));
    /* Only the last n windows count: the first (50) is ignored. */
    FM_CHECK(fmb_stable(rps + 1, p99 + 1, 3, 3, 10));
    /* A window at 130 breaks throughput; then 30 breaks p99. */
    FM_CHECK(!fmb_stable(rps, p99, 5, 3, 10));
    FM_CHECK(!fmb_stable(rps, p99, 6, 2, 10));
    /* Tighter share: (101 - 99) / 100 = 2 % > 1 %. */
    FM_CHECK(!fmb_stable(rps, p99, 4, 3, 1));
    FM_CHECK(fmb_stable(rps, p99, 4, 3, 4.1));
    /* Fewer windows than the rule needs are never stable. */
    FM_CHECK(!fmb_stable(rps, p99, 2, 3, 50));
    FM_CHECK(!fmb_stable(rps, p99, 0, 1, 50));
    /* One window is stable with itself. */
    FM_CHECK(fmb_stable(rps, p99, 1, 1, 0));
}

static void test_acc_merge(void) {
    fmb_acc_t a, b;
    FM_REQUIRE_OK(fmb_acc_init(&a));
    FM_REQUIRE_OK(fmb_acc_init(&b));
    fm_hdr_record(a.lat, 100);
    fm_hdr_record(b.lat, 300);
    a.ok = 1;
    b.ok = 2;
    a.labelled = 16;
    a.correct = 8;
    b.labelled = 16;
    b.correct = 4;
    fmb_errs_add(&a.errs, "OVERLOADED", 2);
    fmb_errs_add(&b.errs, "OVERLOADED", 1);
    fmb_errs_add(&b.errs, "DEADLINE_EXCEEDED", 5);
    fmb_vacc_t *v = fmb_acc_version(&a, "v1", "stable");
    FM_REQUIRE(v);
    v->requests = 3;
    v = fmb_acc_version(&b, "v2", "canary");
    FM_REQUIRE(v);
    v->requests = 4;
    v = fmb_acc_version(&b, "v1", "stable");
    v->requests = 1;
    FM_REQUIRE_OK(fmb_acc_add(&a, &b));
    FM_CHECK_EQ(a.ok, 3);
    FM_CHECK_EQ(a.labelled, 32);
    FM_CHECK_EQ(a.correct, 12);
    FM_CHECK_EQ(fm_hdr_count(a.lat), 2);
    FM_CHECK_EQ(fm_hdr_max(a.lat), 300);
    FM_CHECK_EQ(fmb_errs_total(&a.errs), 8);
    FM_CHECK_EQ(a.errs.ncodes, 2);
    FM_CHECK_EQ(a.nver, 2);
    FM_CHECK_EQ(fmb_acc_version(&a, "v1", "stable")->requests, 4);
    FM_CHECK_EQ(fmb_acc_version(&a, "v2", "canary")->requests, 4);
    fmb_acc_free(&a);
    fmb_acc_free(&b);
}

static void test_error_codes(void) {
    FM_CHECK(fmb_code_retryable("OVERLOADED"));
    FM_CHECK(fmb_code_retryable("UNAVAILABLE"));
    FM_CHECK(fmb_code_retryable("DEADLINE_EXCEEDED"));
    FM_CHECK(!fmb_code_retryable("NOT_FOUND"));
    FM_CHECK(!fmb_code_retryable("INVALID_ARGUMENT"));
    FM_CHECK(!fmb_code_retryable("SOMETHING_NEW"));
    /* More distinct codes than slots end in OTHER, never lost. */
    fmb_errs_t e;
    memset(&e, 0, sizeof e);
    for (int i = 0; i < FMB_MAX_CODES + 5; i++) {
        char code[32];
        snprintf(code, sizeof code, "CODE_%d", i);
        fmb_errs_add(&e, code, 1);
    }
    FM_CHECK_EQ(fmb_errs_total(&e), FMB_MAX_CODES + 5);
    FM_CHECK_STR(e.code[FMB_MAX_CODES - 1], "OTHER");
}

FM_TEST_MAIN({"stability_rule", test_stability_rule}, {"acc_merge", test_acc_merge},
             {"error_codes", test_error_codes})
