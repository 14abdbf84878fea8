/* fm_error.h: the one list of error codes every fmserve module returns.
 *
 * Functions return 0 on success or a negative FM_E* code. A function that
 * fails with a code also records a human-readable detail (which file, which
 * field, what was expected) in a thread-local buffer through fm_fail(), so the
 * caller can print "what went wrong and where" without threading message
 * buffers through every signature. */
#ifndef FM_ERROR_H
#define FM_ERROR_H

#include <stdarg.h>

/* X(name, value, message). The RPC layer maps these onto protocol error codes;
 * keep values stable because they appear in logs. */
#define FM_ERRNO_MAP(X)                                                    \
    X(OK, 0, "success")                                                    \
    X(EINVAL, -1, "invalid argument")                                      \
    X(ENOMEM, -2, "out of memory")                                         \
    X(EIO, -3, "input/output error")                                       \
    X(EFORMAT, -4, "malformed data")                                       \
    X(ETRUNCATED, -5, "truncated data")                                    \
    X(ECHECKSUM, -6, "checksum mismatch")                                  \
    X(ESHAPE, -7, "shape or type mismatch")                                \
    X(ENOTFOUND, -8, "not found")                                          \
    X(EUNSUPPORTED, -9, "unsupported")                                     \
    X(ENODEVICE, -10, "no usable device")                                  \
    X(EBACKEND, -11, "compute backend failure")                            \
    X(EOVERLOADED, -12, "overloaded")                                      \
    X(EDEADLINE, -13, "deadline exceeded")                                 \
    X(EUNAVAILABLE, -14, "unavailable")                                    \
    X(EUNAUTHENTICATED, -15, "unauthenticated")                            \
    X(EDB, -16, "database error")                                          \
    X(ENETWORK, -17, "network error")                                      \
    X(ECANCELED, -18, "canceled")                                          \
    X(EINTERNAL, -19, "internal error")

typedef enum {
#define FM_ERR_ENUM(name, value, msg) FM_##name = value,
    FM_ERRNO_MAP(FM_ERR_ENUM)
#undef FM_ERR_ENUM
} fm_status_t;

/* Short static name of a code, e.g. "EFORMAT"; "E?" for unknown values. */
const char *fm_err_name(int code);
/* Generic static message for a code, e.g. "malformed data". */
const char *fm_strerror(int code);

/* Records a formatted detail for the calling thread and returns `code`, so a
 * failing function can write `return fm_fail(FM_EFORMAT, "%s: bad magic", p);` */
int fm_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int fm_vfail(int code, const char *fmt, va_list ap);

/* The calling thread's last recorded detail, or the generic message of the
 * last code when none was recorded. Valid until the next fm_fail on this thread. */
const char *fm_last_error(void);
/* Forgets the calling thread's last detail. */
void fm_clear_error(void);

#endif /* FM_ERROR_H */
