/* fm_png.h: PNG encoding into memory (the only file that includes libpng is
 * fm_png.c), for images embedded in HTML reports. */
#ifndef FM_PNG_H
#define FM_PNG_H

#include <stddef.h>
#include <stdint.h>

/* Encodes w*h RGB pixels (3 bytes each, row after row) as a PNG. On 0 the
 * caller frees *out with free(). */
int fm_png_encode_rgb(const uint8_t *rgb, int w, int h, uint8_t **out, size_t *len);

/* Base64 (RFC 4648, with padding) of n bytes: malloc'd, NUL-terminated. */
char *fm_base64(const uint8_t *data, size_t n);

#endif /* FM_PNG_H */
