/* fm_hash.h: SHA-256 and MD5 digests (the only place that includes OpenSSL).
 *
 * SHA-256 identifies model weights and training data; MD5 exists only because
 * the official Fashion-MNIST checksums are published as MD5. */
#ifndef FM_HASH_H
#define FM_HASH_H

#include <stddef.h>

#define FM_SHA256_HEX_LEN 64
#define FM_MD5_HEX_LEN 32

typedef struct fm_hasher fm_hasher_t;
typedef enum { FM_HASH_SHA256, FM_HASH_MD5 } fm_hash_kind_t;

/* Streaming interface: new → update* → final_hex (which also frees). */
fm_hasher_t *fm_hasher_new(fm_hash_kind_t kind);
void fm_hasher_update(fm_hasher_t *h, const void *data, size_t len);
/* Writes the lowercase hex digest plus NUL into `hex` (65 bytes for SHA-256,
 * 33 for MD5) and frees the hasher. */
void fm_hasher_final_hex(fm_hasher_t *h, char *hex);

/* One-shot helpers. */
void fm_sha256_hex(const void *data, size_t len, char hex[FM_SHA256_HEX_LEN + 1]);
void fm_md5_hex(const void *data, size_t len, char hex[FM_MD5_HEX_LEN + 1]);
/* Hashes a whole file; returns 0 or FM_EIO (with a detail naming the file). */
int fm_sha256_file(const char *path, char hex[FM_SHA256_HEX_LEN + 1]);

#endif /* FM_HASH_H */
