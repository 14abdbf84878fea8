/* fm_log.c: stderr logger shared by every binary. */
#define _POSIX_C_SOURCE 200809L
#include "fm_log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static fm_log_level_t min_level = FM_LOG_INFO;
static int json_format;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

static void init_from_env(void) {
    const char *lv = getenv("FM_LOG_LEVEL");
    if (lv) {
        for (int i = 0; i < 4; i++)
            if (strcasecmp(lv, level_names[i]) == 0 || (i == 2 && strcasecmp(lv, "warning") == 0))
                min_level = (fm_log_level_t)i;
    }
    const char *fmt = getenv("FM_LOG_FORMAT");
    json_format = fmt && strcasecmp(fmt, "json") == 0;
}

void fm_log_init(void) { pthread_once(&init_once, init_from_env); }

void fm_log_set_level(fm_log_level_t level) {
    fm_log_init();
    min_level = level;
}

int fm_log_enabled(fm_log_level_t level) {
    fm_log_init();
    return level >= min_level;
}

/* Writes `s` as a JSON string body (without quotes). */
static void json_escape(FILE *f, const char *s) {
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
}

void fm_log(fm_log_level_t level, const char *component, const char *fmt, ...) {
    if (!fm_log_enabled(level))
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char stamp[40];
    size_t n = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(stamp + n, sizeof stamp - n, ".%03ldZ", ts.tv_nsec / 1000000);

    pthread_mutex_lock(&log_lock);
    if (json_format) {
        fprintf(stderr, "{\"ts\":\"%s\",\"level\":\"%s\",\"component\":\"", stamp, level_names[level]);
        json_escape(stderr, component ? component : "");
        fputs("\",\"msg\":\"", stderr);
        json_escape(stderr, msg);
        fputs("\"}\n", stderr);
    } else {
        fprintf(stderr, "%s %-5s [%s] %s\n", stamp, level_names[level], component ? component : "-", msg);
    }
    fflush(stderr);
    pthread_mutex_unlock(&log_lock);
}
