/* fm_fetch.c: `fmctl data fetch`: download with libcurl, verify the
 * decompressed content (MD5 as published, plus SHA-256), rename into place. */
#include "fm_fetch.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "fm_error.h"
#include "fm_hash.h"
#include "fm_log.h"

typedef struct official_file {
    const char *name;   /* file name on the mirror */
    const char *md5;    /* of the decompressed content, as published */
    const char *sha256; /* of the decompressed content */
} official_file_t;

static const official_file_t files[] = {
    {"train-images-idx3-ubyte.gz", "f4a8712d7a061bf5bd6d2ca38dc4d50a",
     "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"},
    {"train-labels-idx1-ubyte.gz", "9018921c3c673c538a1fc5bad174d6f9",
     "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"},
    {"t10k-images-idx3-ubyte.gz", "8181f5470baa50b63fa0f6fddb340f0a",
     "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"},
    {"t10k-labels-idx1-ubyte.gz", "15d484375f8d13e6eb1aabb0c3f46965",
     "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"},
};
#define NFILES (sizeof files / sizeof files[0])

/* Checks one file's decompressed content against its checksums. */
static int verify_file(const char *path, const official_file_t *want) {
    gzFile f = gzopen(path, "rb");
    if (!f)
        return fm_fail(FM_ENOTFOUND, "%s: cannot open: %s", path, strerror(errno ? errno : ENOENT));
    fm_hasher_t *md5 = fm_hasher_new(FM_HASH_MD5), *sha = fm_hasher_new(FM_HASH_SHA256);
    unsigned char buf[1 << 16];
    int n;
    while ((n = gzread(f, buf, sizeof buf)) > 0) {
        fm_hasher_update(md5, buf, (size_t)n);
        fm_hasher_update(sha, buf, (size_t)n);
    }
    int errnum = 0;
    const char *zmsg = gzerror(f, &errnum);
    char zbuf[128];
    snprintf(zbuf, sizeof zbuf, "%s", zmsg ? zmsg : "");
    gzclose(f);
    char md5hex[FM_MD5_HEX_LEN + 1], shahex[FM_SHA256_HEX_LEN + 1];
    fm_hasher_final_hex(md5, md5hex);
    fm_hasher_final_hex(sha, shahex);
    if (n < 0 || (errnum != Z_OK && errnum != Z_BUF_ERROR))
        return fm_fail(FM_EFORMAT, "%s: corrupt gzip data (%s)", path, zbuf);
    if (strcmp(md5hex, want->md5) != 0)
        return fm_fail(FM_ECHECKSUM, "%s: MD5 of the content is %s, the official file's is %s", path, md5hex, want->md5);
    if (strcmp(shahex, want->sha256) != 0)
        return fm_fail(FM_ECHECKSUM, "%s: SHA-256 of the content is %s, expected %s", path, shahex, want->sha256);
    return 0;
}

int fm_fetch_verify(const char *dir) {
    char path[1024];
    for (size_t i = 0; i < NFILES; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i].name);
        int rc = verify_file(path, &files[i]);
        if (rc)
            return rc;
    }
    return 0;
}

static int download(const char *url, const char *dest) {
    FILE *out = fopen(dest, "wb");
    if (!out)
        return fm_fail(FM_EIO, "%s: cannot create: %s", dest, strerror(errno));
    CURL *c = curl_easy_init();
    if (!c) {
        fclose(out);
        return fm_fail(FM_ENOMEM, "cannot initialise libcurl");
    }
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 20L);
    /* Abort a stalled transfer: under 1 KB/s for 60 s. */
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "fmctl-data-fetch/1");
    CURLcode res = curl_easy_perform(c);
    curl_easy_cleanup(c);
    int closed = fclose(out);
    if (res != CURLE_OK)
        return fm_fail(FM_ENETWORK, "%s: download failed: %s", url, errbuf[0] ? errbuf : curl_easy_strerror(res));
    if (closed != 0)
        return fm_fail(FM_EIO, "%s: write failed: %s", dest, strerror(errno));
    return 0;
}

int fm_fetch_fashion_mnist(const char *dir, const char *mirror) {
    if (!mirror || !*mirror)
        mirror = getenv("FM_DATA_MIRROR");
    if (!mirror || !*mirror)
        mirror = FM_FETCH_DEFAULT_MIRROR;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return fm_fail(FM_EIO, "%s: cannot create directory: %s", dir, strerror(errno));
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = 0;
    for (size_t i = 0; i < NFILES && rc == 0; i++) {
        char path[1024], tmp[1100], url[1024];
        snprintf(path, sizeof path, "%s/%s", dir, files[i].name);
        if (access(path, R_OK) == 0 && verify_file(path, &files[i]) == 0) {
            fm_info("fetch", "%s: present and verified", path);
            continue;
        }
        snprintf(tmp, sizeof tmp, "%s.part", path);
        snprintf(url, sizeof url, "%s/%s", mirror, files[i].name);
        fm_info("fetch", "downloading %s", url);
        rc = download(url, tmp);
        if (rc == 0)
            rc = verify_file(tmp, &files[i]);
        if (rc == 0 && rename(tmp, path) != 0)
            rc = fm_fail(FM_EIO, "%s: cannot rename into place: %s", path, strerror(errno));
        if (rc)
            unlink(tmp);
        else
            fm_info("fetch", "%s: verified (md5 %s)", path, files[i].md5);
    }
    curl_global_cleanup();
    return rc;
}
