/* fm_fetch.h: downloads the official Fashion-MNIST files and verifies them.
 *
 * The check is on the decompressed content (MD5, as published), so a mirror
 * that re-compresses the files is still accepted and a corrupt one is not. */
#ifndef FM_FETCH_H
#define FM_FETCH_H

/* The official mirror; override with --mirror or FM_DATA_MIRROR. */
/* S3 website endpoints serve plain HTTP only; integrity comes from the checksums. */
#define FM_FETCH_DEFAULT_MIRROR "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"

/* Downloads the four files into `dir` (created if missing), skipping files
 * already present and valid. Files are downloaded to a temporary name and
 * renamed only after their checksum matched. Progress goes to stderr. */
int fm_fetch_fashion_mnist(const char *dir, const char *mirror);

/* Verifies the four files in `dir` against the official checksums;
 * returns 0, or FM_ECHECKSUM / FM_ENOTFOUND with the file named. */
int fm_fetch_verify(const char *dir);

#endif /* FM_FETCH_H */
