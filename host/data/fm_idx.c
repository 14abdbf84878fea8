/* fm_idx.c: IDX reader/writer. zlib's gz* functions read gzip and raw files
 * alike, so the format is detected from the content, not the file name. */
#include "fm_idx.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "fm_error.h"
#include "fm_dims.h"

/* Reads exactly `len` bytes; returns how many were read (short on EOF/error). */
static size_t read_full(gzFile f, void *buf, size_t len) {
    size_t got = 0;
    while (got < len) {
        size_t chunk = len - got > (1u << 30) ? (1u << 30) : len - got;
        int n = gzread(f, (char *)buf + got, (unsigned)chunk);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    return got;
}

static const char *gz_reason(gzFile f) {
    int errnum = 0;
    const char *msg = gzerror(f, &errnum);
    if (errnum == Z_OK || !msg || !*msg)
        return "file ends early";
    return msg;
}

int fm_idx_load(const char *path, int expect_ndim, fm_idx_t *out) {
    memset(out, 0, sizeof *out);
    gzFile f = gzopen(path, "rb");
    if (!f)
        return fm_fail(FM_EIO, "%s: cannot open: %s", path, strerror(errno ? errno : ENOENT));
    gzbuffer(f, 1 << 17);
    fm_hasher_t *h = fm_hasher_new(FM_HASH_SHA256);
    int rc = 0;
    uint8_t *data = NULL;
    unsigned char magic[4];
    if (read_full(f, magic, 4) != 4) {
        rc = fm_fail(FM_ETRUNCATED, "%s: not an IDX file: shorter than its 4-byte magic number", path);
        goto done;
    }
    fm_hasher_update(h, magic, 4);
    if (magic[0] != 0 || magic[1] != 0) {
        rc = fm_fail(FM_EFORMAT, "%s: not an IDX file: bad magic number %02x%02x%02x%02x (expected 0000 08 0N)", path,
                     magic[0], magic[1], magic[2], magic[3]);
        goto done;
    }
    if (magic[2] != 0x08) {
        rc = fm_fail(FM_EUNSUPPORTED, "%s: IDX element type 0x%02x is not supported (only unsigned bytes, 0x08)", path,
                     magic[2]);
        goto done;
    }
    int ndim = magic[3];
    if (ndim < 1 || ndim > FM_IDX_MAX_DIMS) {
        rc = fm_fail(FM_EFORMAT, "%s: IDX rank %d is out of range 1..%d", path, ndim, FM_IDX_MAX_DIMS);
        goto done;
    }
    if (expect_ndim > 0 && ndim != expect_ndim) {
        rc = fm_fail(FM_ESHAPE, "%s: IDX rank is %d, expected %d", path, ndim, expect_ndim);
        goto done;
    }
    unsigned char dimbuf[4 * FM_IDX_MAX_DIMS];
    if (read_full(f, dimbuf, 4 * (size_t)ndim) != 4 * (size_t)ndim) {
        rc = fm_fail(FM_ETRUNCATED, "%s: truncated IDX header (%s)", path, gz_reason(f));
        goto done;
    }
    fm_hasher_update(h, dimbuf, 4 * (size_t)ndim);
    size_t total = 1;
    out->ndim = ndim;
    for (int d = 0; d < ndim; d++) {
        uint32_t v = (uint32_t)dimbuf[4 * d] << 24 | (uint32_t)dimbuf[4 * d + 1] << 16 |
                     (uint32_t)dimbuf[4 * d + 2] << 8 | dimbuf[4 * d + 3];
        if (v == 0) {
            rc = fm_fail(FM_EFORMAT, "%s: dimension %d is zero", path, d);
            goto done;
        }
        out->dims[d] = v;
        if (total > FM_IDX_MAX_BYTES / v) {
            rc = fm_fail(FM_EFORMAT, "%s: declared size exceeds the %zu-byte limit", path, FM_IDX_MAX_BYTES);
            goto done;
        }
        total *= v;
    }
    out->count = out->dims[0];
    out->item_bytes = total / out->count;

    /* Grow the buffer as data actually arrives, so a tiny file declaring a
     * huge size cannot make us allocate that size up front. */
    size_t cap = total < (1u << 20) ? total : (1u << 20), got = 0;
    data = malloc(cap);
    if (!data) {
        rc = fm_fail(FM_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    while (got < total) {
        if (got == cap) {
            size_t ncap = cap * 2 < total ? cap * 2 : total;
            uint8_t *nd = realloc(data, ncap);
            if (!nd) {
                rc = fm_fail(FM_ENOMEM, "%s: out of memory", path);
                goto done;
            }
            data = nd;
            cap = ncap;
        }
        size_t n = read_full(f, data + got, cap - got);
        got += n;
        if (got < cap && got < total)
            break;
    }
    if (got < total) {
        rc = fm_fail(FM_ETRUNCATED, "%s: truncated: header declares %zu data bytes, file holds %zu (%s)", path, total,
                     got, gz_reason(f));
        goto done;
    }
    fm_hasher_update(h, data, total);
    unsigned char extra;
    if (gzread(f, &extra, 1) > 0) {
        rc = fm_fail(FM_EFORMAT, "%s: trailing bytes after the %zu data bytes the header declares", path, total);
        goto done;
    }
    int errnum = 0;
    gzerror(f, &errnum);
    if (errnum != Z_OK && errnum != Z_BUF_ERROR) {
        rc = fm_fail(FM_EFORMAT, "%s: corrupt compressed data (%s)", path, gz_reason(f));
        goto done;
    }
    out->data = data;
    data = NULL;
done:
    gzclose(f);
    free(data);
    if (rc) {
        fm_hasher_final_hex(h, out->sha256);
        memset(out, 0, sizeof *out);
    } else {
        fm_hasher_final_hex(h, out->sha256);
    }
    return rc;
}

void fm_idx_free(fm_idx_t *idx) {
    if (!idx)
        return;
    free(idx->data);
    memset(idx, 0, sizeof *idx);
}

int fm_idx_save(const char *path, const fm_idx_t *idx, int gzip) {
    if (idx->ndim < 1 || idx->ndim > FM_IDX_MAX_DIMS)
        return fm_fail(FM_EINVAL, "%s: cannot write rank %d", path, idx->ndim);
    unsigned char hdr[4 + 4 * FM_IDX_MAX_DIMS] = {0, 0, 0x08, (unsigned char)idx->ndim};
    size_t total = 1;
    for (int d = 0; d < idx->ndim; d++) {
        uint32_t v = idx->dims[d];
        hdr[4 + 4 * d] = (unsigned char)(v >> 24);
        hdr[5 + 4 * d] = (unsigned char)(v >> 16);
        hdr[6 + 4 * d] = (unsigned char)(v >> 8);
        hdr[7 + 4 * d] = (unsigned char)v;
        total *= v;
    }
    gzFile f = gzopen(path, gzip ? "wb9" : "wbT");
    if (!f)
        return fm_fail(FM_EIO, "%s: cannot create: %s", path, strerror(errno ? errno : EIO));
    int ok = gzwrite(f, hdr, 4 + 4 * (unsigned)idx->ndim) > 0;
    size_t off = 0;
    while (ok && off < total) {
        unsigned chunk = total - off > (1u << 30) ? (1u << 30) : (unsigned)(total - off);
        ok = gzwrite(f, idx->data + off, chunk) == (int)chunk;
        off += chunk;
    }
    if (gzclose(f) != Z_OK)
        ok = 0;
    return ok ? 0 : fm_fail(FM_EIO, "%s: write failed", path);
}

/* Finds "<dir>/<base>" or "<dir>/<base>.gz". */
static int find_file(const char *dir, const char *base, char *out, size_t len) {
    struct stat st;
    snprintf(out, len, "%s/%s.gz", dir, base);
    if (stat(out, &st) == 0)
        return 0;
    snprintf(out, len, "%s/%s", dir, base);
    if (stat(out, &st) == 0)
        return 0;
    return fm_fail(FM_ENOTFOUND, "%s: no %s or %s.gz (fmctl data fetch downloads the data set)", dir, base, base);
}

static int check_images(const char *path, const fm_idx_t *img) {
    if (img->ndim != 3 || img->dims[1] != FM_IMAGE_SIDE || img->dims[2] != FM_IMAGE_SIDE)
        return fm_fail(FM_ESHAPE, "%s: images must be N x 28 x 28, file holds %u x %u x %u", path, img->dims[0],
                       img->ndim > 1 ? img->dims[1] : 0, img->ndim > 2 ? img->dims[2] : 0);
    return 0;
}

int fm_dataset_load_images(const char *images_path, fm_dataset_t *out) {
    memset(out, 0, sizeof *out);
    fm_idx_t img;
    int rc = fm_idx_load(images_path, 3, &img);
    if (rc)
        return rc;
    rc = check_images(images_path, &img);
    if (rc) {
        fm_idx_free(&img);
        return rc;
    }
    out->n = img.count;
    out->images = img.data;
    snprintf(out->sha256, sizeof out->sha256, "%s", img.sha256);
    snprintf(out->images_path, sizeof out->images_path, "%s", images_path);
    return 0;
}

int fm_dataset_load(const char *dir, const char *split, fm_dataset_t *out) {
    memset(out, 0, sizeof *out);
    if (!dir)
        return fm_fail(FM_EINVAL, "no data directory given");
    if (!split || (strcmp(split, "train") != 0 && strcmp(split, "t10k") != 0))
        return fm_fail(FM_EINVAL, "unknown split '%s' (expected train or t10k)", split ? split : "");
    char ipath[512], lpath[512], base[64];
    snprintf(base, sizeof base, "%s-images-idx3-ubyte", split);
    int rc = find_file(dir, base, ipath, sizeof ipath);
    if (rc)
        return rc;
    snprintf(base, sizeof base, "%s-labels-idx1-ubyte", split);
    rc = find_file(dir, base, lpath, sizeof lpath);
    if (rc)
        return rc;

    fm_idx_t img, lab;
    rc = fm_idx_load(ipath, 3, &img);
    if (rc)
        return rc;
    rc = check_images(ipath, &img);
    if (rc) {
        fm_idx_free(&img);
        return rc;
    }
    rc = fm_idx_load(lpath, 1, &lab);
    if (rc) {
        fm_idx_free(&img);
        return rc;
    }
    if (lab.count != img.count) {
        rc = fm_fail(FM_ESHAPE, "%s holds %zu labels but %s holds %zu images", lpath, lab.count, ipath, img.count);
        goto fail;
    }
    for (size_t i = 0; i < lab.count; i++)
        if (lab.data[i] >= FM_NUM_CLASSES) {
            rc = fm_fail(FM_EFORMAT, "%s: label %u at index %zu is not a class (0..9)", lpath, lab.data[i], i);
            goto fail;
        }
    out->n = img.count;
    out->images = img.data;
    out->labels = lab.data;
    snprintf(out->images_path, sizeof out->images_path, "%s", ipath);
    char both[2 * FM_SHA256_HEX_LEN + 1];
    snprintf(both, sizeof both, "%s%s", img.sha256, lab.sha256);
    fm_sha256_hex(both, strlen(both), out->sha256);
    return 0;
fail:
    fm_idx_free(&img);
    fm_idx_free(&lab);
    return rc;
}

void fm_dataset_free(fm_dataset_t *ds) {
    if (!ds)
        return;
    free(ds->images);
    free(ds->labels);
    memset(ds, 0, sizeof *ds);
}

const char *fm_data_dir(const char *flag) {
    if (flag && *flag)
        return flag;
    const char *env = getenv("FM_DATA");
    if (env && *env)
        return env;
    fm_fail(FM_EINVAL, "no data directory: pass --data DIR or set FM_DATA (fmctl data fetch downloads Fashion-MNIST)");
    return NULL;
}
