/* fm_msgpack.h: the only door to msgpack-c. Packing into a growable buffer,
 * read-only views of decoded values, and a streaming frame reader that checks
 * every length against limits before msgpack-c allocates anything.
 *
 * Ownership: an fm_mp_buf_t owns its bytes (fm_mp_buf_free). A decoded
 * message (fm_mp_msg_t) owns a msgpack zone that holds its value tree and a
 * reference to the read buffer its str/bin values point into, so bin bytes
 * are never copied by decoding; every value view taken from a message is
 * valid until fm_mp_msg_free(). Zones may be freed on any one thread at a time
 * (the read buffer's reference count is atomic). */
#ifndef FM_MSGPACK_H
#define FM_MSGPACK_H

#include <stddef.h>
#include <stdint.h>

/* ---- Packing ---------------------------------------------------------- */

/* A growable byte buffer. Packers append to it; an allocation failure sets
 * `oom` and later appends do nothing, so a caller checks once at the end. */
typedef struct fm_mp_buf {
    char *data;
    size_t len;
    size_t cap;
    int oom;
} fm_mp_buf_t;

void fm_mp_buf_init(fm_mp_buf_t *b);
void fm_mp_buf_free(fm_mp_buf_t *b);
/* Makes room for `extra` more bytes; 0 or FM_ENOMEM (and sets oom). */
int fm_mp_buf_reserve(fm_mp_buf_t *b, size_t extra);
void fm_mp_buf_append(fm_mp_buf_t *b, const void *p, size_t n);
/* Hands the bytes to the caller (who frees them with free()) and leaves the
 * buffer empty. */
char *fm_mp_buf_steal(fm_mp_buf_t *b, size_t *len);

void fm_mp_pack_nil(fm_mp_buf_t *b);
void fm_mp_pack_bool(fm_mp_buf_t *b, int v);
void fm_mp_pack_uint(fm_mp_buf_t *b, uint64_t v);
void fm_mp_pack_int(fm_mp_buf_t *b, int64_t v);
void fm_mp_pack_float(fm_mp_buf_t *b, float v);   /* msgpack float 32 */
void fm_mp_pack_double(fm_mp_buf_t *b, double v); /* msgpack float 64 */
void fm_mp_pack_str(fm_mp_buf_t *b, const char *s, size_t len);
void fm_mp_pack_cstr(fm_mp_buf_t *b, const char *s); /* NULL packs nil */
void fm_mp_pack_bin(fm_mp_buf_t *b, const void *p, size_t len);
/* The bin header alone; the caller appends `len` bytes next. */
void fm_mp_pack_bin_header(fm_mp_buf_t *b, size_t len);
void fm_mp_pack_array(fm_mp_buf_t *b, uint32_t n);
void fm_mp_pack_map(fm_mp_buf_t *b, uint32_t n);
/* Key helper for maps with string keys. */
void fm_mp_pack_key(fm_mp_buf_t *b, const char *key);

/* ---- Value views ------------------------------------------------------ */

/* A decoded value; its layout is private to fm_msgpack.c. */
typedef struct msgpack_object fm_mp_obj_t;

typedef enum {
    FM_MP_NIL,
    FM_MP_BOOL,
    FM_MP_UINT,  /* a non-negative integer */
    FM_MP_INT,   /* a negative integer */
    FM_MP_FLOAT, /* float 32 or float 64 */
    FM_MP_STR,
    FM_MP_BIN,
    FM_MP_ARRAY,
    FM_MP_MAP,
    FM_MP_EXT
} fm_mp_type_t;

fm_mp_type_t fm_mp_type(const fm_mp_obj_t *o);
/* "nil", "bool", "uint", "int", "float", "str", "bin", "array", "map", "ext". */
const char *fm_mp_type_name(fm_mp_type_t t);

/* Typed reads: 0, or FM_ESHAPE when the value has another type or range. */
int fm_mp_get_u64(const fm_mp_obj_t *o, uint64_t *out);
int fm_mp_get_i64(const fm_mp_obj_t *o, int64_t *out);
int fm_mp_get_double(const fm_mp_obj_t *o, double *out); /* integers are accepted too */
int fm_mp_get_bool(const fm_mp_obj_t *o, int *out);
/* Pointer into the frame and length; NULL when not a str / bin. */
const char *fm_mp_get_str(const fm_mp_obj_t *o, size_t *len);
const uint8_t *fm_mp_get_bin(const fm_mp_obj_t *o, size_t *len);
/* Copies a str into `dst` (NUL-terminated); FM_ESHAPE when not a str or
 * longer than cap-1. */
int fm_mp_copy_str(const fm_mp_obj_t *o, char *dst, size_t cap);
/* 1 when `o` is a str equal to `s`. */
int fm_mp_str_eq(const fm_mp_obj_t *o, const char *s);

/* Element count of an array or map (pairs); 0 for other types. */
uint32_t fm_mp_len(const fm_mp_obj_t *o);
const fm_mp_obj_t *fm_mp_at(const fm_mp_obj_t *array, uint32_t i);
const fm_mp_obj_t *fm_mp_key_at(const fm_mp_obj_t *map, uint32_t i);
const fm_mp_obj_t *fm_mp_val_at(const fm_mp_obj_t *map, uint32_t i);
/* The value of the first string key equal to `key`, or NULL. */
const fm_mp_obj_t *fm_mp_map_get(const fm_mp_obj_t *map, const char *key);

/* A short JSON-like rendering for logs, errors and tools (bins are shown as
 * their length; output is cut at `cap`). Returns `buf`. */
char *fm_mp_to_text(const fm_mp_obj_t *o, char *buf, size_t cap);

/* ---- Streaming reader ------------------------------------------------- */

/* Limits checked from the headers, before any byte of a payload is read and
 * before msgpack-c allocates the element arrays of a container. */
typedef struct fm_mp_limits {
    size_t max_frame_bytes; /* one top-level value, header to last byte */
    uint32_t max_objects;   /* values in one frame, containers included */
    int max_depth;          /* nesting depth (a bare scalar is depth 1); at most 30 */
} fm_mp_limits_t;

/* One decoded top-level value. */
typedef struct fm_mp_msg {
    const fm_mp_obj_t *root;
    size_t frame_bytes; /* its encoded size */
    void *zone_;        /* private */
} fm_mp_msg_t;

void fm_mp_msg_free(fm_mp_msg_t *m);

typedef struct fm_mp_reader fm_mp_reader_t;

/* `bulk_bytes` is how much one read may take beyond the current frame (for
 * example 256 KiB). The reader keeps every frame contiguous in one buffer
 * chunk without ever moving bytes already received: a chunk always keeps
 * room for a whole max_frame_bytes frame after a bulk read, and near its end
 * the reader asks only for bytes that certainly belong to the current frame,
 * starting a fresh chunk at the next frame boundary. So a payload is written
 * once by read() and then only referenced. */
int fm_mp_reader_new(const fm_mp_limits_t *lim, size_t bulk_bytes, fm_mp_reader_t **out);
void fm_mp_reader_free(fm_mp_reader_t *r);
/* Where the next received bytes go (for a libuv alloc callback or recv()):
 * 0, or FM_ENOMEM. */
int fm_mp_reader_buffer(fm_mp_reader_t *r, char **buf, size_t *len);
/* `n` bytes were written at the pointer from fm_mp_reader_buffer. */
void fm_mp_reader_consumed(fm_mp_reader_t *r, size_t n);
/* Takes the next complete frame: 1 with *out set, 0 when more bytes are
 * needed, or a negative code when the stream is broken (FM_EFORMAT: not
 * msgpack; FM_EINVAL: a limit was exceeded; FM_ENOMEM), with a detail from
 * fm_last_error(). After an error the reader refuses everything. */
int fm_mp_reader_next(fm_mp_reader_t *r, fm_mp_msg_t **out);
/* Bytes received but not yet returned as frames. */
size_t fm_mp_reader_pending(const fm_mp_reader_t *r);
/* When the frame being read looks like an RPC request ([0, msgid, ...]) and
 * its msgid has been seen: 1 and *msgid; otherwise 0. Lets a server answer a
 * refused frame with the right msgid. */
int fm_mp_reader_frame_msgid(const fm_mp_reader_t *r, uint64_t *msgid);

/* Decodes one complete value from `data` (which must outlive the message:
 * str/bin views point into it). Trailing bytes are an error. */
int fm_mp_decode(const void *data, size_t len, const fm_mp_limits_t *lim, fm_mp_msg_t **out);

#endif /* FM_MSGPACK_H */
