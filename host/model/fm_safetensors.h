/* fm_safetensors.h: the safetensors container (8-byte little-endian header
 * length, a JSON header, then one data buffer), read and written through
 * cJSON. Only the container is handled here; fm_model_io.c decides which
 * tensors a model must hold. */
#ifndef FM_SAFETENSORS_H
#define FM_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define FM_ST_MAX_DIMS 8
#define FM_ST_MAX_HEADER (100u << 20) /* the format's own limit on the JSON header */

typedef struct fm_st_tensor {
    char name[128];
    char dtype[16];
    int ndim;
    int64_t shape[FM_ST_MAX_DIMS];
    size_t begin, end; /* byte range within the data buffer */
} fm_st_tensor_t;

typedef struct fm_st_file {
    int ntensors;
    fm_st_tensor_t *tensors;
    uint8_t *data; /* the data buffer (owned) */
    size_t data_len;
    char *metadata_json; /* the "__metadata__" object as JSON text, or NULL */
} fm_st_file_t;

/* Reads and validates a whole file: header length within the file and the
 * format's limit, JSON syntax, entry types, known dtypes, byte ranges inside
 * the buffer that match dtype x shape, and a buffer covered exactly once. */
int fm_st_read(const char *path, fm_st_file_t *out);
void fm_st_free(fm_st_file_t *f);
const fm_st_tensor_t *fm_st_find(const fm_st_file_t *f, const char *name);
/* Bytes per element of a dtype name ("F32" -> 4); 0 for unknown dtypes. */
size_t fm_st_dtype_size(const char *dtype);

/* One tensor to write: F32 data of `numel` elements. */
typedef struct fm_st_entry {
    const char *name;
    int ndim;
    const int64_t *shape;
    const float *data;
} fm_st_entry_t;

/* Serialises F32 tensors (in the given order) plus string metadata pairs
 * (`meta` is key, value, key, value, ..., NULL) into a malloc'd buffer. */
int fm_st_serialize(const fm_st_entry_t *entries, int n, const char *const *meta, uint8_t **buf, size_t *len);

#endif /* FM_SAFETENSORS_H */
