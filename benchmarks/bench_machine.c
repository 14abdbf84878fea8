/* bench_machine.c: machine and commit descriptions for the benchmarks. */
#include "bench_machine.h"

#include <stdio.h>
#include <string.h>

#ifndef FM_SOURCE_DIR
#define FM_SOURCE_DIR "."
#endif
#ifndef FM_BUILD_COMMIT
#define FM_BUILD_COMMIT "unknown"
#endif

void bench_cpu_model(char *buf, size_t len) {
    snprintf(buf, len, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "model name", 10) == 0) {
            char *v = strchr(line, ':');
            if (v) {
                v += 1 + (v[1] == ' ');
                v[strcspn(v, "\n")] = 0;
                snprintf(buf, len, "%s", v);
            }
            break;
        }
    fclose(f);
}

void bench_commit(char *buf, size_t len) {
    snprintf(buf, len, "%s", FM_BUILD_COMMIT);
    FILE *p = popen("git -C '" FM_SOURCE_DIR "' describe --always --dirty --abbrev=12 2>/dev/null", "r");
    if (!p)
        return;
    char line[128];
    if (fgets(line, sizeof line, p)) {
        line[strcspn(line, "\n")] = 0;
        if (line[0])
            snprintf(buf, len, "%s", line);
    }
    pclose(p);
}
