/* fm_hash.c: digests over OpenSSL's EVP interface. */
#include "fm_hash.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_error.h"

struct fm_hasher {
    EVP_MD_CTX *ctx;
};

fm_hasher_t *fm_hasher_new(fm_hash_kind_t kind) {
    fm_hasher_t *h = malloc(sizeof *h);
    if (!h)
        return NULL;
    h->ctx = EVP_MD_CTX_new();
    if (!h->ctx || !EVP_DigestInit_ex(h->ctx, kind == FM_HASH_MD5 ? EVP_md5() : EVP_sha256(), NULL)) {
        EVP_MD_CTX_free(h->ctx);
        free(h);
        return NULL;
    }
    return h;
}

void fm_hasher_update(fm_hasher_t *h, const void *data, size_t len) { EVP_DigestUpdate(h->ctx, data, len); }

void fm_hasher_final_hex(fm_hasher_t *h, char *hex) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_DigestFinal_ex(h->ctx, md, &n);
    for (unsigned int i = 0; i < n; i++)
        sprintf(hex + 2 * i, "%02x", md[i]);
    hex[2 * n] = '\0';
    EVP_MD_CTX_free(h->ctx);
    free(h);
}

static void one_shot(fm_hash_kind_t kind, const void *data, size_t len, char *hex) {
    fm_hasher_t *h = fm_hasher_new(kind);
    if (!h) {
        hex[0] = '\0';
        return;
    }
    fm_hasher_update(h, data, len);
    fm_hasher_final_hex(h, hex);
}

void fm_sha256_hex(const void *data, size_t len, char hex[FM_SHA256_HEX_LEN + 1]) {
    one_shot(FM_HASH_SHA256, data, len, hex);
}

void fm_md5_hex(const void *data, size_t len, char hex[FM_MD5_HEX_LEN + 1]) { one_shot(FM_HASH_MD5, data, len, hex); }

int fm_sha256_file(const char *path, char hex[FM_SHA256_HEX_LEN + 1]) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return fm_fail(FM_EIO, "%s: cannot open: %s", path, strerror(errno));
    fm_hasher_t *h = fm_hasher_new(FM_HASH_SHA256);
    if (!h) {
        fclose(f);
        return fm_fail(FM_ENOMEM, "%s: cannot create hasher", path);
    }
    unsigned char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        fm_hasher_update(h, buf, n);
    int bad = ferror(f);
    fclose(f);
    fm_hasher_final_hex(h, hex);
    if (bad)
        return fm_fail(FM_EIO, "%s: read error", path);
    return 0;
}
