/* fm_test.h: a tiny test runner for fmserve's C tests.
 *
 * A test program lists its cases in a table and calls fm_test_main(). Checks
 * print both values and the location, and the exit code is the verdict:
 * 0 all passed, 1 something failed, 77 skipped (CTest's SKIP_RETURN_CODE),
 * so a failure can never be printed and then reported as a pass. */
#ifndef FM_TEST_H
#define FM_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_error.h"

#define FM_TEST_SKIP_CODE 77

typedef struct fm_test_case {
    const char *name;
    void (*fn)(void);
} fm_test_case_t;

/* Failures in the current case; reset by the runner. */
extern int fm_test_failures;
/* Set by FM_TEST_SKIP inside a case: the case is reported skipped. */
extern const char *fm_test_skip_reason;

#define FM_TEST_FAIL_AT(...)                                   \
    do {                                                       \
        fprintf(stderr, "  FAIL %s:%d: ", __FILE__, __LINE__); \
        fprintf(stderr, __VA_ARGS__);                          \
        fputc('\n', stderr);                                   \
        fm_test_failures++;                                    \
    } while (0)

#define FM_CHECK(cond)                                     \
    do {                                                   \
        if (!(cond))                                       \
            FM_TEST_FAIL_AT("expected %s", #cond);         \
    } while (0)

/* Stops the current case when the condition does not hold. */
#define FM_REQUIRE(cond)                                   \
    do {                                                   \
        if (!(cond)) {                                     \
            FM_TEST_FAIL_AT("required %s", #cond);         \
            return;                                        \
        }                                                  \
    } while (0)

#define FM_CHECK_INT(a, op, b)                                                               \
    do {                                                                                     \
        long long fm_a_ = (long long)(a), fm_b_ = (long long)(b);                            \
        if (!(fm_a_ op fm_b_))                                                               \
            FM_TEST_FAIL_AT("%s %s %s: %lld vs %lld", #a, #op, #b, fm_a_, fm_b_);            \
    } while (0)
#define FM_CHECK_EQ(a, b) FM_CHECK_INT(a, ==, b)

#define FM_CHECK_NEAR(a, b, tol)                                                                  \
    do {                                                                                          \
        double fm_a_ = (double)(a), fm_b_ = (double)(b), fm_t_ = (double)(tol);                   \
        if (!(fabs(fm_a_ - fm_b_) <= fm_t_))                                                      \
            FM_TEST_FAIL_AT("%s ~ %s: %.12g vs %.12g (|diff| %.3g > %.3g)", #a, #b, fm_a_, fm_b_, \
                            fabs(fm_a_ - fm_b_), fm_t_);                                          \
    } while (0)

#define FM_CHECK_STR(a, b)                                                          \
    do {                                                                            \
        const char *fm_a_ = (a), *fm_b_ = (b);                                      \
        if (!fm_a_ || !fm_b_ || strcmp(fm_a_, fm_b_) != 0)                          \
            FM_TEST_FAIL_AT("%s == %s: \"%s\" vs \"%s\"", #a, #b, fm_a_ ? fm_a_ : "(null)", \
                            fm_b_ ? fm_b_ : "(null)");                              \
    } while (0)

/* Checks that `s` contains `needle` (e.g. that an error message names the file). */
#define FM_CHECK_CONTAINS(s, needle)                                                     \
    do {                                                                                 \
        const char *fm_s_ = (s), *fm_n_ = (needle);                                      \
        if (!fm_s_ || !strstr(fm_s_, fm_n_))                                             \
            FM_TEST_FAIL_AT("\"%s\" should contain \"%s\"", fm_s_ ? fm_s_ : "(null)", fm_n_); \
    } while (0)

/* A call returning an fm status that must succeed; prints the error detail. */
#define FM_CHECK_OK(call)                                                                       \
    do {                                                                                        \
        int fm_rc_ = (call);                                                                    \
        if (fm_rc_ != 0)                                                                        \
            FM_TEST_FAIL_AT("%s returned %s: %s", #call, fm_err_name(fm_rc_), fm_last_error()); \
    } while (0)
#define FM_REQUIRE_OK(call)                                                                     \
    do {                                                                                        \
        int fm_rc_ = (call);                                                                    \
        if (fm_rc_ != 0) {                                                                      \
            FM_TEST_FAIL_AT("%s returned %s: %s", #call, fm_err_name(fm_rc_), fm_last_error()); \
            return;                                                                             \
        }                                                                                       \
    } while (0)

/* A call that must fail with `code`. */
#define FM_CHECK_ERR(call, code)                                                                  \
    do {                                                                                          \
        int fm_rc_ = (call);                                                                      \
        if (fm_rc_ != (code))                                                                     \
            FM_TEST_FAIL_AT("%s returned %s, expected %s (%s)", #call, fm_err_name(fm_rc_), #code, \
                            fm_last_error());                                                     \
    } while (0)

/* Marks the current case skipped, with the reason, and leaves it. */
#define FM_TEST_SKIP(reason)          \
    do {                              \
        fm_test_skip_reason = reason; \
        return;                       \
    } while (0)

/* Runs every case (or those named on the command line) and returns the exit
 * code: 1 if any failed, 77 if every case run was skipped, else 0. */
int fm_test_main(int argc, char **argv, const fm_test_case_t *cases, int ncases);
#define FM_TEST_MAIN(...)                                                         \
    int main(int argc, char **argv) {                                             \
        static const fm_test_case_t cases_[] = {__VA_ARGS__};                     \
        return fm_test_main(argc, argv, cases_, (int)(sizeof cases_ / sizeof cases_[0])); \
    }

/* Paths set by CMake: the source tree's tests/fixtures and a scratch dir. */
const char *fm_test_fixtures_dir(void);
/* A fresh empty temporary directory, removed at exit unless FM_TEST_KEEP=1. */
const char *fm_test_tmpdir(void);
/* Joins a directory and a file name into a static-lifetime-per-call buffer
 * owned by the caller (malloc'd). */
char *fm_test_path(const char *dir, const char *name);
/* $FM_DATA when it names a directory holding the full Fashion-MNIST, else NULL. */
const char *fm_test_full_data_dir(void);

#endif /* FM_TEST_H */
