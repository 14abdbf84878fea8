/* fm_time.h: clocks used for latency accounting (monotonic) and for records
 * that leave the process (wall clock). */
#ifndef FM_TIME_H
#define FM_TIME_H

#include <stdint.h>
#include <time.h>

/* Monotonic clock in microseconds; never goes backwards, unrelated to the date. */
static inline uint64_t fm_now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Monotonic clock in nanoseconds, for benchmarks. */
static inline uint64_t fm_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Wall clock in microseconds since the Unix epoch, for stored timestamps. */
static inline int64_t fm_wall_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

#endif /* FM_TIME_H */
