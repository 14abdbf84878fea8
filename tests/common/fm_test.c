/* fm_test.c: the runner behind fm_test.h. */
#include "fm_test.h"

#include <ftw.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fm_time.h"

int fm_test_failures;
const char *fm_test_skip_reason;

static char tmpdir[512];

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void cleanup_tmpdir(void) {
    if (tmpdir[0] && !getenv("FM_TEST_KEEP"))
        nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

const char *fm_test_tmpdir(void) {
    if (!tmpdir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(tmpdir, sizeof tmpdir, "%s/fmtest-XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(tmpdir)) {
            perror("mkdtemp");
            exit(1);
        }
        atexit(cleanup_tmpdir);
    }
    return tmpdir;
}

const char *fm_test_fixtures_dir(void) {
#ifdef FM_TEST_FIXTURES
    return FM_TEST_FIXTURES;
#else
    return "tests/fixtures";
#endif
}

char *fm_test_path(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (!p)
        abort();
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

const char *fm_test_full_data_dir(void) {
    const char *d = getenv("FM_DATA");
    if (!d || !*d)
        return NULL;
    char path[1024];
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte.gz", d);
    if (access(path, R_OK) == 0)
        return d;
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte", d);
    return access(path, R_OK) == 0 ? d : NULL;
}

int fm_test_main(int argc, char **argv, const fm_test_case_t *cases, int ncases) {
    int failed = 0, passed = 0, skipped = 0;
    for (int i = 0; i < ncases; i++) {
        if (argc > 1) {
            int wanted = 0;
            for (int a = 1; a < argc; a++)
                if (strcmp(argv[a], cases[i].name) == 0)
                    wanted = 1;
            if (!wanted)
                continue;
        }
        fm_test_failures = 0;
        fm_test_skip_reason = NULL;
        fm_clear_error();
        uint64_t t0 = fm_now_us();
        cases[i].fn();
        double ms = (double)(fm_now_us() - t0) / 1000.0;
        if (fm_test_failures) {
            failed++;
            fprintf(stderr, "[FAIL] %s (%d failed checks, %.1f ms)\n", cases[i].name, fm_test_failures, ms);
        } else if (fm_test_skip_reason) {
            skipped++;
            fprintf(stderr, "[SKIP] %s: %s\n", cases[i].name, fm_test_skip_reason);
        } else {
            passed++;
            fprintf(stderr, "[ OK ] %s (%.1f ms)\n", cases[i].name, ms);
        }
    }
    fprintf(stderr, "%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    if (failed)
        return 1;
    if (skipped && !passed)
        return FM_TEST_SKIP_CODE;
    return 0;
}
