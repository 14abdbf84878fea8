/* fm_safetensors.c: safetensors reading and writing (see fm_safetensors.h). */
#include "fm_safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_error.h"

#define FM_ST_MAX_FILE ((size_t)1 << 30)

size_t fm_st_dtype_size(const char *dtype) {
    static const struct {
        const char *name;
        size_t size;
    } table[] = {{"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4}, {"I16", 2},
                 {"I8", 1},  {"U8", 1},  {"U16", 2}, {"U32", 4},  {"U64", 8}, {"BOOL", 1}};
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(table[i].name, dtype) == 0)
            return table[i].size;
    return 0;
}

static int cmp_begin(const void *a, const void *b) {
    const fm_st_tensor_t *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/* Reads a JSON number that must be a non-negative integer. */
static int json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 9007199254740992.0 ||
        v->valuedouble != (double)(uint64_t)v->valuedouble)
        return -1;
    *out = (uint64_t)v->valuedouble;
    return 0;
}

static int parse_header(const char *path, const char *json, size_t data_len, fm_st_file_t *out) {
    cJSON *root = cJSON_Parse(json);
    if (!root)
        return fm_fail(FM_EFORMAT, "%s: header is not valid JSON (near \"%.20s\")", path,
                       cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() : "");
    int rc = 0;
    if (!cJSON_IsObject(root)) {
        rc = fm_fail(FM_EFORMAT, "%s: header is not a JSON object", path);
        goto done;
    }
    int n = 0;
    for (cJSON *e = root->child; e; e = e->next)
        n += strcmp(e->string, "__metadata__") != 0;
    out->tensors = calloc(n ? (size_t)n : 1, sizeof *out->tensors);
    if (!out->tensors) {
        rc = fm_fail(FM_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    for (cJSON *e = root->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(e)) {
                rc = fm_fail(FM_EFORMAT, "%s: __metadata__ is not an object", path);
                goto done;
            }
            out->metadata_json = cJSON_PrintUnformatted(e);
            continue;
        }
        fm_st_tensor_t *t = &out->tensors[out->ntensors];
        if (strlen(e->string) >= sizeof t->name) {
            rc = fm_fail(FM_EFORMAT, "%s: tensor name too long (%.40s...)", path, e->string);
            goto done;
        }
        snprintf(t->name, sizeof t->name, "%s", e->string);
        const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(e, "dtype");
        const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
        const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        if (!cJSON_IsObject(e) || !cJSON_IsString(dtype) || !cJSON_IsArray(shape) || !cJSON_IsArray(offs) ||
            cJSON_GetArraySize(offs) != 2) {
            rc = fm_fail(FM_EFORMAT, "%s: tensor '%s' needs dtype, shape and data_offsets [begin, end]", path, t->name);
            goto done;
        }
        snprintf(t->dtype, sizeof t->dtype, "%s", dtype->valuestring);
        size_t esize = fm_st_dtype_size(t->dtype);
        if (!esize) {
            rc = fm_fail(FM_EFORMAT, "%s: tensor '%s' has unknown dtype '%s'", path, t->name, t->dtype);
            goto done;
        }
        int nd = cJSON_GetArraySize(shape);
        if (nd > FM_ST_MAX_DIMS) {
            rc = fm_fail(FM_EFORMAT, "%s: tensor '%s' has %d dimensions (at most %d)", path, t->name, nd,
                         FM_ST_MAX_DIMS);
            goto done;
        }
        t->ndim = nd;
        uint64_t numel = 1;
        for (int d = 0; d < nd; d++) {
            uint64_t v;
            if (json_uint(cJSON_GetArrayItem(shape, d), &v) != 0 || (v && numel > (FM_ST_MAX_FILE / v))) {
                rc = fm_fail(FM_EFORMAT, "%s: tensor '%s' has an invalid shape entry at position %d", path, t->name, d);
                goto done;
            }
            t->shape[d] = (int64_t)v;
            numel *= v;
        }
        uint64_t b, en;
        if (json_uint(cJSON_GetArrayItem(offs, 0), &b) || json_uint(cJSON_GetArrayItem(offs, 1), &en) || b > en ||
            en > data_len) {
            rc = fm_fail(FM_ETRUNCATED, "%s: tensor '%s' data_offsets lie outside the %zu-byte data buffer", path,
                         t->name, data_len);
            goto done;
        }
        if (en - b != numel * esize) {
            rc = fm_fail(FM_EFORMAT, "%s: tensor '%s' spans %llu bytes but %s x %llu elements need %llu", path, t->name,
                         (unsigned long long)(en - b), t->dtype, (unsigned long long)numel,
                         (unsigned long long)(numel * esize));
            goto done;
        }
        t->begin = (size_t)b;
        t->end = (size_t)en;
        out->ntensors++;
    }
    /* The buffer must be covered exactly once, with no holes or overlaps. */
    fm_st_tensor_t *sorted = malloc(sizeof *sorted * (out->ntensors ? (size_t)out->ntensors : 1));
    if (!sorted) {
        rc = fm_fail(FM_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    memcpy(sorted, out->tensors, sizeof *sorted * (size_t)out->ntensors);
    qsort(sorted, (size_t)out->ntensors, sizeof *sorted, cmp_begin);
    size_t pos = 0;
    for (int i = 0; i < out->ntensors && rc == 0; i++) {
        if (sorted[i].begin != pos)
            rc = fm_fail(FM_EFORMAT, "%s: tensor '%s' starts at byte %zu, expected %zu (overlap or hole)", path,
                         sorted[i].name, sorted[i].begin, pos);
        pos = sorted[i].end;
    }
    if (rc == 0 && pos != data_len)
        rc = fm_fail(FM_EFORMAT, "%s: %zu trailing bytes after the last tensor", path, data_len - pos);
    free(sorted);
done:
    cJSON_Delete(root);
    return rc;
}

int fm_st_read(const char *path, fm_st_file_t *out) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f)
        return fm_fail(errno == ENOENT ? FM_ENOTFOUND : FM_EIO, "%s: cannot open: %s", path, strerror(errno));
    int rc = 0;
    char *json = NULL;
    if (fseek(f, 0, SEEK_END) != 0) {
        rc = fm_fail(FM_EIO, "%s: cannot seek", path);
        goto done;
    }
    long size = ftell(f);
    rewind(f);
    unsigned char lenbuf[8];
    if (size < 8 || fread(lenbuf, 1, 8, f) != 8) {
        rc = fm_fail(FM_ETRUNCATED, "%s: truncated: %ld bytes, shorter than the 8-byte header length", path, size);
        goto done;
    }
    if ((size_t)size > FM_ST_MAX_FILE) {
        rc = fm_fail(FM_EFORMAT, "%s: %ld bytes is larger than the %zu-byte limit", path, size, FM_ST_MAX_FILE);
        goto done;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | lenbuf[i];
    if (hlen > FM_ST_MAX_HEADER || hlen > (uint64_t)size - 8) {
        rc = fm_fail(hlen > (uint64_t)size - 8 ? FM_ETRUNCATED : FM_EFORMAT,
                     "%s: header length %llu does not fit the file (%ld bytes) or the %u-byte limit", path,
                     (unsigned long long)hlen, size, FM_ST_MAX_HEADER);
        goto done;
    }
    json = malloc(hlen + 1);
    size_t data_len = (size_t)size - 8 - hlen;
    out->data = malloc(data_len ? data_len : 1);
    if (!json || !out->data) {
        rc = fm_fail(FM_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    if (fread(json, 1, hlen, f) != hlen || fread(out->data, 1, data_len, f) != data_len) {
        rc = fm_fail(FM_EIO, "%s: read error", path);
        goto done;
    }
    json[hlen] = '\0';
    if (strlen(json) != hlen) {
        rc = fm_fail(FM_EFORMAT, "%s: header contains a NUL byte", path);
        goto done;
    }
    out->data_len = data_len;
    rc = parse_header(path, json, data_len, out);
done:
    fclose(f);
    free(json);
    if (rc)
        fm_st_free(out);
    return rc;
}

void fm_st_free(fm_st_file_t *f) {
    if (!f)
        return;
    free(f->tensors);
    free(f->data);
    free(f->metadata_json);
    memset(f, 0, sizeof *f);
}

const fm_st_tensor_t *fm_st_find(const fm_st_file_t *f, const char *name) {
    for (int i = 0; i < f->ntensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0)
            return &f->tensors[i];
    return NULL;
}

int fm_st_serialize(const fm_st_entry_t *entries, int n, const char *const *meta, uint8_t **buf, size_t *len) {
    cJSON *root = cJSON_CreateObject();
    if (!root)
        return fm_fail(FM_ENOMEM, "safetensors: out of memory");
    if (meta && meta[0]) {
        cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
        for (int i = 0; meta[i] && meta[i + 1]; i += 2)
            cJSON_AddStringToObject(m, meta[i], meta[i + 1]);
    }
    size_t offset = 0;
    for (int i = 0; i < n; i++) {
        cJSON *t = cJSON_AddObjectToObject(root, entries[i].name);
        cJSON_AddStringToObject(t, "dtype", "F32");
        cJSON *shape = cJSON_AddArrayToObject(t, "shape");
        size_t numel = 1;
        for (int d = 0; d < entries[i].ndim; d++) {
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)entries[i].shape[d]));
            numel *= (size_t)entries[i].shape[d];
        }
        cJSON *offs = cJSON_AddArrayToObject(t, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)offset));
        offset += numel * sizeof(float);
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)offset));
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!json)
        return fm_fail(FM_ENOMEM, "safetensors: out of memory");
    /* Pad the header with spaces so the data buffer starts 8-byte aligned. */
    size_t hlen = strlen(json);
    size_t padded = (hlen + 7) & ~(size_t)7;
    *len = 8 + padded + offset;
    *buf = malloc(*len);
    if (!*buf) {
        free(json);
        return fm_fail(FM_ENOMEM, "safetensors: out of memory");
    }
    for (int i = 0; i < 8; i++)
        (*buf)[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    memcpy(*buf + 8, json, hlen);
    memset(*buf + 8 + hlen, ' ', padded - hlen);
    free(json);
    uint8_t *p = *buf + 8 + padded;
    for (int i = 0; i < n; i++) {
        size_t numel = 1;
        for (int d = 0; d < entries[i].ndim; d++)
            numel *= (size_t)entries[i].shape[d];
        /* Little-endian host assumed (x86-64, aarch64), as the format requires. */
        memcpy(p, entries[i].data, numel * sizeof(float));
        p += numel * sizeof(float);
    }
    return 0;
}
