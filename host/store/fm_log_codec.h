/* fm_log_codec.h: the byte layout of the prediction log's batches, the same
 * in the writer's memory buffer and in spool records, so a batch goes to
 * disk and comes back without being re-encoded: predictions (with the
 * pixels of the sampled images), feedback, and rollup deltas (sparse).
 * Little-endian, packed, no alignment assumed; docs/database.md has the
 * field tables.
 *
 * Ownership: encoders write into the caller's buffer; decoders fill a
 * caller-owned fm_logc_rows_t whose rows point into the payload (images,
 * ids) and into the struct itself (version strings), valid while both are. */
#ifndef FM_LOG_CODEC_H
#define FM_LOG_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "fm_pixel_stats.h"
#include "fm_rows.h"
#include "fm_sink.h"

/* Spool record types. */
#define FM_LOGC_PREDICTIONS 1u
#define FM_LOGC_FEEDBACK 2u
#define FM_LOGC_DELTA 3u

/* Predictions: a sequence of request entries, each
 *   uint8 'R', uint8 role (0 stable, 1 canary), uint8 route (fm_route_t),
 *   uint8 version length v, uint16 images k, uint16 0, uint8 request_id[16],
 *   int64 ts_us, uint32 queue_us, uint32 compute_us, uint32 total_us,
 *   v bytes of version; then k images, each
 *   uint16 image_index, uint8 label, uint8 sampled, float32 confidence,
 *   float32 probs[10], and when sampled 784 pixel bytes. */
#define FM_LOGC_REQUEST_HEAD 44u
#define FM_LOGC_IMAGE_HEAD 48u

/* Bytes for images [first, first + count) of p, `sampled` of them with pixels. */
size_t fm_logc_request_bytes(const fm_prediction_t *p, size_t count, size_t sampled);
/* Encodes them (sampled[k] != 0 keeps image first+k's pixels); `request_id`
 * is p->request_id parsed, role and route already mapped. Returns bytes. */
size_t fm_logc_put_request(uint8_t *dst, const fm_prediction_t *p, const uint8_t request_id[16],
                           fm_model_role_t role, fm_route_t route, size_t first, size_t count,
                           const uint8_t *sampled);

/* Maps the sink's strings; -1 when unknown. */
int fm_logc_role(const char *role);
int fm_logc_route(const char *routing);

#define FM_LOGC_MAX_VERSIONS 16

typedef struct fm_logc_rows {
    fm_prediction_row_t *rows;
    const uint8_t **images; /* per row: its pixels, or NULL */
    size_t n, cap;
    size_t sampled;
    char versions[FM_LOGC_MAX_VERSIONS][128];
    int nversions;
} fm_logc_rows_t;

/* Decodes a predictions payload (growing out->rows as needed). FM_EFORMAT
 * naming the offset when it is not one; more than FM_LOGC_MAX_VERSIONS
 * distinct versions in one batch is FM_EFORMAT too (the writer never makes
 * such a batch). */
int fm_logc_decode_predictions(const uint8_t *payload, size_t len, fm_logc_rows_t *out);
void fm_logc_rows_free(fm_logc_rows_t *r);

/* Feedback: entries of uint8 request_id[16], int64 received_us, uint16
 * image_index, uint8 label, uint8 source length s, s bytes of source. */
#define FM_LOGC_FEEDBACK_HEAD 28u
size_t fm_logc_put_feedback(uint8_t *dst, const fm_feedback_row_t *f);
/* Decodes into rows (sources point into a copy owned by *strings, which the
 * caller frees); *n receives the count. */
int fm_logc_decode_feedback(const uint8_t *payload, size_t len, fm_feedback_row_t **rows, size_t *n,
                            char **strings);

/* Rollup delta: int64 bucket_start_us, uint8 version length v, v bytes,
 * uint64 images, uint64 predictions, uint64 classes[10], uint32 m, m x
 * (uint32 pixel*256+value, uint32 count), uint32 c, c x (uint16 q, uint32
 * count). Malloc'd; *len receives its size. */
uint8_t *fm_logc_encode_delta(int64_t bucket_start_us, const char *version, const fm_pixel_hist_t *h,
                              const fm_pred_hist_t *ph, size_t *len);
/* Decodes into the caller's zeroed histograms and a 128-byte version. */
int fm_logc_decode_delta(const uint8_t *payload, size_t len, int64_t *bucket_start_us, char version[128],
                         fm_pixel_hist_t *h, fm_pred_hist_t *ph);

#endif /* FM_LOG_CODEC_H */
