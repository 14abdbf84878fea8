/* bench_machine.h: what every benchmark prints beside its figures, so a
 * result names the machine and the commit it was measured on. */
#ifndef FM_BENCH_MACHINE_H
#define FM_BENCH_MACHINE_H

#include <stddef.h>

/* The CPU's model name from /proc/cpuinfo, else "unknown CPU". */
void bench_cpu_model(char *buf, size_t len);

/* The commit the benchmark runs from: asked of git at run time (the build
 * may be older than the tree, and "-dirty" says the tree was edited), else
 * the one recorded when the build was configured. */
void bench_commit(char *buf, size_t len);

#endif
