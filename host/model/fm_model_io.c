/* fm_model_io.c: the in-memory model and its directory format:
 * model.safetensors (F32 tensors, PyTorch layouts) + model.json (sidecar). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fm_error.h"
#include "fm_model.h"
#include "fm_safetensors.h"

#define WEIGHTS_FILE "model.safetensors"
#define SIDECAR_FILE "model.json"
#define SIDECAR_FORMAT "fmserve-model"
#define SIDECAR_FORMAT_VERSION 1

struct fm_model {
    fm_arch_t arch;
    int nparams;
    fm_tensor_t params[FM_MAX_PARAMS];
    float *storage; /* one 64-byte-aligned block holding every parameter */
    size_t numel;
    cJSON *meta;    /* the sidecar document */
    char name[128];
    char version[64];
    char sha256[FM_SHA256_HEX_LEN + 1];
    char dir[1024];
};

static void fill_architecture(cJSON *meta, fm_arch_t arch) {
    cJSON_DeleteItemFromObjectCaseSensitive(meta, "architecture");
    cJSON *a = cJSON_AddObjectToObject(meta, "architecture");
    cJSON_AddStringToObject(a, "type", fm_arch_name(arch));
    cJSON_AddStringToObject(a, "summary", fm_arch_summary(arch));
    cJSON_AddStringToObject(a, "input", "uint8[28][28] pixels scaled by 1/255");
    cJSON_AddStringToObject(a, "output", "softmax over 10 classes");
    cJSON_AddNumberToObject(a, "flops_per_image", fm_arch_flops(arch));
    cJSON *cls = cJSON_AddArrayToObject(a, "classes");
    for (int k = 0; k < FM_NUM_CLASSES; k++)
        cJSON_AddItemToArray(cls, cJSON_CreateString(fm_class_names[k]));
    cJSON *params = cJSON_AddArrayToObject(a, "parameters");
    int n;
    const fm_param_spec_t *spec = fm_arch_params(arch, &n);
    for (int i = 0; i < n; i++) {
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "name", spec[i].name);
        cJSON *shape = cJSON_AddArrayToObject(p, "shape");
        for (int d = 0; d < spec[i].ndim; d++)
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)spec[i].shape[d]));
        cJSON_AddItemToArray(params, p);
    }
}

static fm_model_t *alloc_model(fm_arch_t arch) {
    int n;
    const fm_param_spec_t *spec = fm_arch_params(arch, &n);
    if (!spec)
        return NULL;
    fm_model_t *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->arch = arch;
    m->nparams = n;
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        fm_tensor_t *t = &m->params[i];
        t->name = spec[i].name;
        t->ndim = spec[i].ndim;
        t->numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            t->shape[d] = spec[i].shape[d];
            t->numel *= (size_t)spec[i].shape[d];
        }
        /* Keep every tensor 64-byte aligned within the block. */
        total += (t->numel + 15) & ~(size_t)15;
    }
    void *block = NULL;
    if (posix_memalign(&block, 64, total * sizeof(float)) != 0) {
        free(m);
        return NULL;
    }
    memset(block, 0, total * sizeof(float));
    m->storage = block;
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        m->params[i].data = m->storage + off;
        m->numel += m->params[i].numel;
        off += (m->params[i].numel + 15) & ~(size_t)15;
    }
    return m;
}

fm_model_t *fm_model_new(fm_arch_t arch) {
    fm_model_t *m = alloc_model(arch);
    if (!m)
        return NULL;
    m->meta = cJSON_CreateObject();
    cJSON_AddStringToObject(m->meta, "format", SIDECAR_FORMAT);
    cJSON_AddNumberToObject(m->meta, "format_version", SIDECAR_FORMAT_VERSION);
    fm_model_set_identity(m, arch == FM_ARCH_MLP ? "fashion-mnist-mlp" : "fashion-mnist-cnn", "v0");
    fill_architecture(m->meta, arch);
    return m;
}

void fm_model_free(fm_model_t *m) {
    if (!m)
        return;
    free(m->storage);
    cJSON_Delete(m->meta);
    free(m);
}

fm_model_t *fm_model_clone(const fm_model_t *src) {
    fm_model_t *m = alloc_model(src->arch);
    if (!m)
        return NULL;
    for (int i = 0; i < m->nparams; i++)
        memcpy(m->params[i].data, src->params[i].data, src->params[i].numel * sizeof(float));
    m->meta = cJSON_Duplicate(src->meta, 1);
    memcpy(m->name, src->name, sizeof m->name);
    memcpy(m->version, src->version, sizeof m->version);
    memcpy(m->sha256, src->sha256, sizeof m->sha256);
    memcpy(m->dir, src->dir, sizeof m->dir);
    return m;
}

fm_arch_t fm_model_arch(const fm_model_t *m) { return m->arch; }
int fm_model_param_count(const fm_model_t *m) { return m->nparams; }
size_t fm_model_numel(const fm_model_t *m) { return m->numel; }
const char *fm_model_name(const fm_model_t *m) { return m->name; }
const char *fm_model_version(const fm_model_t *m) { return m->version; }
const char *fm_model_weights_sha256(const fm_model_t *m) { return m->sha256; }
const char *fm_model_dir(const fm_model_t *m) { return m->dir; }

const fm_tensor_t *fm_model_param(const fm_model_t *m, int index) {
    return index >= 0 && index < m->nparams ? &m->params[index] : NULL;
}

fm_tensor_t *fm_model_param_mut(fm_model_t *m, int index) {
    return index >= 0 && index < m->nparams ? &m->params[index] : NULL;
}

static void set_string(cJSON *obj, const char *key, const char *value) {
    cJSON *old = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (old)
        cJSON_ReplaceItemInObjectCaseSensitive(obj, key, cJSON_CreateString(value));
    else
        cJSON_AddStringToObject(obj, key, value);
}

void fm_model_set_identity(fm_model_t *m, const char *name, const char *version) {
    if (name) {
        snprintf(m->name, sizeof m->name, "%s", name);
        set_string(m->meta, "name", name);
    }
    if (version) {
        snprintf(m->version, sizeof m->version, "%s", version);
        set_string(m->meta, "version", version);
    }
}

/* The object holding `section` (created on demand when `create`). */
static cJSON *section_obj(cJSON *meta, const char *section, int create) {
    if (!section)
        return meta;
    cJSON *s = cJSON_GetObjectItemCaseSensitive(meta, section);
    if (!s && create)
        s = cJSON_AddObjectToObject(meta, section);
    return cJSON_IsObject(s) ? s : NULL;
}

int fm_model_meta_set_number(fm_model_t *m, const char *section, const char *key, double value) {
    cJSON *s = section_obj(m->meta, section, 1);
    if (!s)
        return fm_fail(FM_EINVAL, "model metadata: '%s' is not an object", section);
    cJSON *item = cJSON_CreateNumber(value);
    if (cJSON_GetObjectItemCaseSensitive(s, key))
        cJSON_ReplaceItemInObjectCaseSensitive(s, key, item);
    else
        cJSON_AddItemToObject(s, key, item);
    return 0;
}

int fm_model_meta_set_string(fm_model_t *m, const char *section, const char *key, const char *value) {
    cJSON *s = section_obj(m->meta, section, 1);
    if (!s)
        return fm_fail(FM_EINVAL, "model metadata: '%s' is not an object", section);
    if (!section && strcmp(key, "name") == 0) {
        fm_model_set_identity(m, value, NULL);
        return 0;
    }
    if (!section && strcmp(key, "version") == 0) {
        fm_model_set_identity(m, NULL, value);
        return 0;
    }
    set_string(s, key, value);
    return 0;
}

int fm_model_meta_get_number(const fm_model_t *m, const char *section, const char *key, double *out) {
    cJSON *s = section_obj(m->meta, section, 0);
    cJSON *v = s ? cJSON_GetObjectItemCaseSensitive(s, key) : NULL;
    if (!cJSON_IsNumber(v))
        return fm_fail(FM_ENOTFOUND, "model metadata has no number %s%s%s", section ? section : "",
                       section ? "." : "", key);
    *out = v->valuedouble;
    return 0;
}

const char *fm_model_meta_get_string(const fm_model_t *m, const char *section, const char *key) {
    cJSON *s = section_obj(m->meta, section, 0);
    cJSON *v = s ? cJSON_GetObjectItemCaseSensitive(s, key) : NULL;
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

char *fm_model_meta_json(const fm_model_t *m) { return cJSON_Print(m->meta); }

/* ---- loading ---- */

/* Reads a whole text file of at most `limit` bytes; on failure returns NULL
 * and stores the error code in *rc. */
static char *read_text(const char *path, size_t limit, int *rc) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        *rc = fm_fail(errno == ENOENT ? FM_ENOTFOUND : FM_EIO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(limit + 1);
    size_t n = buf ? fread(buf, 1, limit + 1, f) : 0;
    fclose(f);
    if (!buf) {
        *rc = fm_fail(FM_ENOMEM, "%s: out of memory", path);
        return NULL;
    }
    if (n > limit) {
        free(buf);
        *rc = fm_fail(FM_EFORMAT, "%s: larger than the %zu-byte limit", path, limit);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

static void shape_str(char *buf, size_t len, int ndim, const int64_t *shape) {
    size_t o = (size_t)snprintf(buf, len, "[");
    for (int d = 0; d < ndim && o < len; d++)
        o += (size_t)snprintf(buf + o, len - o, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (o < len)
        snprintf(buf + o, len - o, "]");
}

int fm_model_load(const char *dir, fm_model_t **out) {
    *out = NULL;
    char wpath[1100], spath[1100];
    snprintf(wpath, sizeof wpath, "%s/%s", dir, WEIGHTS_FILE);
    snprintf(spath, sizeof spath, "%s/%s", dir, SIDECAR_FILE);

    int rc = 0;
    char *text = read_text(spath, 1u << 20, &rc);
    if (!text)
        return rc;
    cJSON *meta = cJSON_Parse(text);
    if (!meta) {
        /* cJSON's error pointer points into `text`: report before freeing it. */
        rc = fm_fail(FM_EFORMAT, "%s: not valid JSON (near \"%.20s\")", spath,
                     cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() : "");
        free(text);
        return rc;
    }
    free(text);
    fm_model_t *m = NULL;
    fm_st_file_t st = {0};
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(meta, "format");
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(meta, "architecture"), "type");
    const cJSON *weights = cJSON_GetObjectItemCaseSensitive(meta, "weights");
    const cJSON *want_sha = cJSON_GetObjectItemCaseSensitive(weights, "sha256");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(meta, "name");
    const cJSON *version = cJSON_GetObjectItemCaseSensitive(meta, "version");
    if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, SIDECAR_FORMAT) != 0) {
        rc = fm_fail(FM_EFORMAT, "%s: \"format\" must be \"%s\"", spath, SIDECAR_FORMAT);
        goto fail;
    }
    if (!cJSON_IsString(name) || !cJSON_IsString(version) || !version->valuestring[0]) {
        rc = fm_fail(FM_EFORMAT, "%s: \"name\" and \"version\" must be non-empty strings", spath);
        goto fail;
    }
    if (!cJSON_IsString(want_sha) || strlen(want_sha->valuestring) != FM_SHA256_HEX_LEN) {
        rc = fm_fail(FM_EFORMAT, "%s: \"weights.sha256\" must be a 64-character hex digest", spath);
        goto fail;
    }
    fm_arch_t a;
    if (!cJSON_IsString(arch) || fm_arch_parse(arch->valuestring, &a) != 0) {
        rc = fm_fail(FM_EFORMAT, "%s: \"architecture.type\" must be \"mlp\" or \"cnn\"", spath);
        goto fail;
    }

    char sha[FM_SHA256_HEX_LEN + 1];
    if (access(wpath, F_OK) != 0) {
        rc = fm_fail(FM_ENOTFOUND, "%s: missing (the weights file named by %s)", wpath, spath);
        goto fail;
    }
    if ((rc = fm_sha256_file(wpath, sha)) != 0)
        goto fail;
    if (strcmp(sha, want_sha->valuestring) != 0) {
        rc = fm_fail(FM_ECHECKSUM, "%s: SHA-256 is %s but %s records %s (file changed or corrupt)", wpath, sha, spath,
                     want_sha->valuestring);
        goto fail;
    }
    if ((rc = fm_st_read(wpath, &st)) != 0)
        goto fail;

    m = alloc_model(a);
    if (!m) {
        rc = fm_fail(FM_ENOMEM, "%s: out of memory", wpath);
        goto fail;
    }
    for (int i = 0; i < m->nparams; i++) {
        fm_tensor_t *t = &m->params[i];
        const fm_st_tensor_t *s = fm_st_find(&st, t->name);
        if (!s) {
            rc = fm_fail(FM_ESHAPE, "%s: missing tensor '%s' required by the %s architecture", wpath, t->name,
                         fm_arch_name(a));
            goto fail;
        }
        if (strcmp(s->dtype, "F32") != 0) {
            rc = fm_fail(FM_ESHAPE, "%s: tensor '%s' has dtype %s, expected F32", wpath, t->name, s->dtype);
            goto fail;
        }
        int same = s->ndim == t->ndim;
        for (int d = 0; same && d < t->ndim; d++)
            same = s->shape[d] == t->shape[d];
        if (!same) {
            char got[96], want[96];
            shape_str(got, sizeof got, s->ndim, s->shape);
            shape_str(want, sizeof want, t->ndim, t->shape);
            rc = fm_fail(FM_ESHAPE, "%s: tensor '%s' has shape %s, expected %s", wpath, t->name, got, want);
            goto fail;
        }
        memcpy(t->data, st.data + s->begin, t->numel * sizeof(float));
        for (size_t k = 0; k < t->numel; k++)
            if (!isfinite(t->data[k])) {
                rc = fm_fail(FM_EFORMAT, "%s: tensor '%s' holds a non-finite value at index %zu", wpath, t->name, k);
                goto fail;
            }
    }
    if (st.ntensors != m->nparams) {
        for (int i = 0; i < st.ntensors; i++) {
            int known = 0;
            for (int j = 0; j < m->nparams; j++)
                known |= strcmp(st.tensors[i].name, m->params[j].name) == 0;
            if (!known) {
                rc = fm_fail(FM_ESHAPE, "%s: unexpected tensor '%s' for the %s architecture", wpath,
                             st.tensors[i].name, fm_arch_name(a));
                goto fail;
            }
        }
    }
    fm_st_free(&st);
    m->meta = meta;
    snprintf(m->name, sizeof m->name, "%s", name->valuestring);
    snprintf(m->version, sizeof m->version, "%s", version->valuestring);
    snprintf(m->sha256, sizeof m->sha256, "%s", sha);
    snprintf(m->dir, sizeof m->dir, "%s", dir);
    *out = m;
    return 0;
fail:
    fm_st_free(&st);
    cJSON_Delete(meta);
    fm_model_free(m);
    return rc;
}

/* ---- saving ---- */

static int write_file_atomic(const char *path, const void *data, size_t len) {
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f)
        return fm_fail(FM_EIO, "%s: cannot create: %s", tmp, strerror(errno));
    int ok = fwrite(data, 1, len, f) == len;
    ok &= fflush(f) == 0;
    ok &= fsync(fileno(f)) == 0;
    ok &= fclose(f) == 0;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return fm_fail(FM_EIO, "%s: write failed: %s", path, strerror(e));
    }
    return 0;
}

int fm_model_save(fm_model_t *m, const char *dir) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return fm_fail(FM_EIO, "%s: cannot create directory: %s", dir, strerror(errno));
    fm_st_entry_t entries[FM_MAX_PARAMS];
    for (int i = 0; i < m->nparams; i++)
        entries[i] = (fm_st_entry_t){m->params[i].name, m->params[i].ndim, m->params[i].shape, m->params[i].data};
    const char *st_meta[] = {"format", "pt", "architecture", fm_arch_name(m->arch), "version", m->version, NULL};
    uint8_t *buf;
    size_t len;
    int rc = fm_st_serialize(entries, m->nparams, st_meta, &buf, &len);
    if (rc)
        return rc;
    char wpath[1100], spath[1100];
    snprintf(wpath, sizeof wpath, "%s/%s", dir, WEIGHTS_FILE);
    snprintf(spath, sizeof spath, "%s/%s", dir, SIDECAR_FILE);
    fm_sha256_hex(buf, len, m->sha256);
    rc = write_file_atomic(wpath, buf, len);
    free(buf);
    if (rc)
        return rc;

    cJSON *w = section_obj(m->meta, "weights", 1);
    set_string(w, "file", WEIGHTS_FILE);
    set_string(w, "dtype", "F32");
    set_string(w, "sha256", m->sha256);
    cJSON_DeleteItemFromObjectCaseSensitive(w, "bytes");
    cJSON_AddNumberToObject(w, "bytes", (double)len);
    cJSON_DeleteItemFromObjectCaseSensitive(w, "parameters");
    cJSON_AddNumberToObject(w, "parameters", (double)m->numel);
    fill_architecture(m->meta, m->arch);
    if (!cJSON_GetObjectItemCaseSensitive(m->meta, "created_at")) {
        char stamp[32];
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
        cJSON_AddStringToObject(m->meta, "created_at", stamp);
    }
    char *json = cJSON_Print(m->meta);
    if (!json)
        return fm_fail(FM_ENOMEM, "%s: out of memory", spath);
    size_t jlen = strlen(json);
    char *withnl = realloc(json, jlen + 2);
    if (!withnl) {
        free(json);
        return fm_fail(FM_ENOMEM, "%s: out of memory", spath);
    }
    withnl[jlen] = '\n';
    withnl[jlen + 1] = '\0';
    rc = write_file_atomic(spath, withnl, jlen + 1);
    free(withnl);
    if (rc == 0)
        snprintf(m->dir, sizeof m->dir, "%s", dir);
    return rc;
}
