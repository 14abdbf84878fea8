/* fm_log.h: one-line, timestamped log records on stderr.
 *
 * Level comes from FM_LOG_LEVEL (debug|info|warn|error, default info); the
 * format from FM_LOG_FORMAT (text|json, default text) so that the same binary
 * logs for a terminal and for a cluster's log collector. Thread-safe. */
#ifndef FM_LOG_H
#define FM_LOG_H

typedef enum { FM_LOG_DEBUG = 0, FM_LOG_INFO = 1, FM_LOG_WARN = 2, FM_LOG_ERROR = 3 } fm_log_level_t;

/* Reads FM_LOG_LEVEL / FM_LOG_FORMAT; called lazily by the first record. */
void fm_log_init(void);
void fm_log_set_level(fm_log_level_t level);
int fm_log_enabled(fm_log_level_t level);
/* `component` is a short tag such as "server" or "cuda". */
void fm_log(fm_log_level_t level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define fm_debug(comp, ...) fm_log(FM_LOG_DEBUG, comp, __VA_ARGS__)
#define fm_info(comp, ...) fm_log(FM_LOG_INFO, comp, __VA_ARGS__)
#define fm_warn(comp, ...) fm_log(FM_LOG_WARN, comp, __VA_ARGS__)
#define fm_error(comp, ...) fm_log(FM_LOG_ERROR, comp, __VA_ARGS__)

#endif /* FM_LOG_H */
