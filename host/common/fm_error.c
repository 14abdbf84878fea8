/* fm_error.c: error names, messages and the thread-local failure detail. */
#include "fm_error.h"

#include <stdio.h>
#include <string.h>

static _Thread_local char last_detail[1024];
static _Thread_local int last_code;

const char *fm_err_name(int code) {
    switch (code) {
#define FM_ERR_NAME(name, value, msg) \
    case value:                       \
        return #name;
        FM_ERRNO_MAP(FM_ERR_NAME)
#undef FM_ERR_NAME
    }
    return "E?";
}

const char *fm_strerror(int code) {
    switch (code) {
#define FM_ERR_MSG(name, value, msg) \
    case value:                      \
        return msg;
        FM_ERRNO_MAP(FM_ERR_MSG)
#undef FM_ERR_MSG
    }
    return "unknown error";
}

int fm_vfail(int code, const char *fmt, va_list ap) {
    last_code = code;
    if (fmt)
        vsnprintf(last_detail, sizeof last_detail, fmt, ap);
    else
        snprintf(last_detail, sizeof last_detail, "%s", fm_strerror(code));
    return code;
}

int fm_fail(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fm_vfail(code, fmt, ap);
    va_end(ap);
    return code;
}

const char *fm_last_error(void) {
    if (last_detail[0])
        return last_detail;
    return fm_strerror(last_code);
}

void fm_clear_error(void) {
    last_detail[0] = '\0';
    last_code = 0;
}
