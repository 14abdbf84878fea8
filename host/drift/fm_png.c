/* fm_png.c: libpng writing into a growing memory buffer, and base64. */
#include "fm_png.h"

#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include "fm_error.h"

typedef struct membuf {
    uint8_t *p;
    size_t len, cap;
    int oom;
} membuf_t;

static void write_mem(png_structp png, png_bytep data, png_size_t n) {
    membuf_t *m = png_get_io_ptr(png);
    if (m->oom)
        return;
    if (m->len + n > m->cap) {
        size_t cap = m->cap ? m->cap : 4096;
        while (cap < m->len + n)
            cap *= 2;
        uint8_t *p = realloc(m->p, cap);
        if (!p) {
            m->oom = 1;
            return;
        }
        m->p = p;
        m->cap = cap;
    }
    memcpy(m->p + m->len, data, n);
    m->len += n;
}

static void flush_mem(png_structp png) { (void)png; }

int fm_png_encode_rgb(const uint8_t *rgb, int w, int h, uint8_t **out, size_t *len) {
    *out = NULL;
    *len = 0;
    if (w <= 0 || h <= 0 || w > 16384 || h > 16384)
        return fm_fail(FM_EINVAL, "png: bad size %dx%d", w, h);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, &info);
        return fm_fail(FM_ENOMEM, "png: out of memory");
    }
    /* volatile: modified between setjmp and a possible longjmp. */
    membuf_t *volatile m = calloc(1, sizeof *m);
    png_bytep *volatile rows = malloc((size_t)h * sizeof *rows);
    if (!m || !rows) {
        free(m);
        free(rows);
        png_destroy_write_struct(&png, &info);
        return fm_fail(FM_ENOMEM, "png: out of memory");
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(m->p);
        free(m);
        free(rows);
        return fm_fail(FM_EINTERNAL, "png: libpng failed while encoding");
    }
    png_set_write_fn(png, m, write_mem, flush_mem);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    for (int y = 0; y < h; y++)
        rows[y] = (png_bytep)(rgb + (size_t)y * (size_t)w * 3);
    png_set_rows(png, info, rows);
    png_write_png(png, info, PNG_TRANSFORM_IDENTITY, NULL);
    png_destroy_write_struct(&png, &info);
    free(rows);
    if (m->oom) {
        free(m->p);
        free(m);
        return fm_fail(FM_ENOMEM, "png: out of memory");
    }
    *out = m->p;
    *len = m->len;
    free(m);
    return 0;
}

char *fm_base64(const uint8_t *d, size_t n) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *s = malloc((n + 2) / 3 * 4 + 1);
    if (!s) {
        fm_fail(FM_ENOMEM, "base64: out of memory");
        return NULL;
    }
    char *p = s;
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16 | (uint32_t)d[i + 1] << 8 | d[i + 2];
        *p++ = tab[v >> 18];
        *p++ = tab[(v >> 12) & 63];
        *p++ = tab[(v >> 6) & 63];
        *p++ = tab[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)d[i] << 16 | (i + 1 < n ? (uint32_t)d[i + 1] << 8 : 0);
        *p++ = tab[v >> 18];
        *p++ = tab[(v >> 12) & 63];
        *p++ = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        *p++ = '=';
    }
    *p = '\0';
    return s;
}
