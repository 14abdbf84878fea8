/* fm_idx.h: IDX files (the Fashion-MNIST/MNIST container), raw or gzipped,
 * and the image/label pairs built from them.
 *
 * Every refusal names the file and the problem (bad magic, unsupported type,
 * dimension or count mismatch, truncation, trailing bytes) through fm_fail(). */
#ifndef FM_IDX_H
#define FM_IDX_H

#include <stddef.h>
#include <stdint.h>

#include "fm_hash.h"

#define FM_IDX_MAX_DIMS 4
/* Largest payload accepted (bytes after the header): far above the 47 MB of
 * the training images, far below what a corrupt header could ask for. */
#define FM_IDX_MAX_BYTES ((size_t)1 << 30)

typedef struct fm_idx {
    int ndim;
    uint32_t dims[FM_IDX_MAX_DIMS];
    size_t count;      /* dims[0] */
    size_t item_bytes; /* product of dims[1..] (1 for a vector) */
    uint8_t *data;     /* count * item_bytes bytes; owned, freed by fm_idx_free */
    /* SHA-256 of the decompressed file (header and payload). */
    char sha256[FM_SHA256_HEX_LEN + 1];
} fm_idx_t;

/* Loads an unsigned-byte IDX file; gzip is detected from the content, not the
 * name. `expect_ndim` > 0 makes a different rank an error. */
int fm_idx_load(const char *path, int expect_ndim, fm_idx_t *out);
void fm_idx_free(fm_idx_t *idx);
/* Writes `idx` as an IDX file, gzipped when `gzip` is non-zero (used by the
 * tests to build bad files and by fixtures). */
int fm_idx_save(const char *path, const fm_idx_t *idx, int gzip);

/* A set of 28x28 images with their labels (0..9). */
typedef struct fm_dataset {
    size_t n;
    uint8_t *images; /* n * 784, row-major per image */
    uint8_t *labels; /* n */
    /* SHA-256 over the images file's sha256 and the labels file's sha256
     * (hex, concatenated): identifies the exact data a model was trained on. */
    char sha256[FM_SHA256_HEX_LEN + 1];
    char images_path[512];
} fm_dataset_t;

/* Loads "<dir>/<split>-images-idx3-ubyte[.gz]" and the matching labels file,
 * where split is "train" or "t10k". Checks shapes, matching counts and that
 * every label is below 10. */
int fm_dataset_load(const char *dir, const char *split, fm_dataset_t *out);
/* Loads an images file alone (labels unknown), e.g. for `fmctl predict`. */
int fm_dataset_load_images(const char *images_path, fm_dataset_t *out);
void fm_dataset_free(fm_dataset_t *ds);

/* The data directory: `flag` when given, else $FM_DATA, else NULL (and an
 * fm_fail detail telling the user how to provide one). */
const char *fm_data_dir(const char *flag);

#endif /* FM_IDX_H */
