/* fm_rows.h: the exact COPY text rows the prediction-log writer sends for
 * the predictions and sampled_inputs tables (docs/database.md, "Writer row
 * formats"). Formatting only: the caller owns the buffer and the COPY. */
#ifndef FM_ROWS_H
#define FM_ROWS_H

#include <stddef.h>
#include <stdint.h>

#include "fm_pixel_stats.h"
#include "fm_uuid.h"

/* The COPY statements the rows below belong to. */
#define FM_ROWS_PREDICTIONS_COPY                                                                         \
    "COPY predictions (request_id, image_index, ts, model_role, model_version, route, label, confidence, " \
    "probs, queue_us, compute_us, total_us) FROM STDIN"
#define FM_ROWS_SAMPLED_COPY                                                                            \
    "COPY sampled_inputs (request_id, image_index, ts, model_version, pixels, mean_intensity, "          \
    "std_intensity, nonzero_share, bright_share, centroid_row, centroid_col) FROM STDIN"

/* The same COPYs in PostgreSQL's binary format, which the server parses
 * about twice as fast (no float or array text to parse). */
#define FM_ROWS_PREDICTIONS_COPY_BINARY FM_ROWS_PREDICTIONS_COPY " WITH (FORMAT binary)"
#define FM_ROWS_SAMPLED_COPY_BINARY FM_ROWS_SAMPLED_COPY " WITH (FORMAT binary)"

/* Upper bounds of one formatted row (model versions up to 127 bytes). */
#define FM_ROWS_PREDICTION_MAX 768
#define FM_ROWS_SAMPLED_MAX 2304

typedef enum { FM_ROLE_STABLE = 0, FM_ROLE_CANARY = 1 } fm_model_role_t;
typedef enum { FM_ROUTE_AB = 0, FM_ROUTE_PINNED = 1, FM_ROUTE_STICKY = 2 } fm_route_t;

const char *fm_model_role_name(fm_model_role_t r); /* "stable", "canary" */
/* fm_rows_route_name, not fm_route_name: the server has its own (other enum order) and links this library. */
const char *fm_rows_route_name(fm_route_t r); /* "ab", "pinned", "sticky" */

typedef struct fm_prediction_row {
    uint8_t request_id[FM_UUID_BYTES]; /* the server's UUIDv7 (uuid column), growing with time */
    int image_index;           /* 0.. within the request */
    int64_t ts_us;             /* wall clock, µs since the Unix epoch (fm_wall_us) */
    fm_model_role_t role;
    const char *model_version; /* e.g. "v3"; at most 127 bytes */
    fm_route_t route;
    int label;                 /* 0..9 */
    float confidence;          /* probability of `label` */
    float probs[10];           /* softmax output */
    int64_t queue_us, compute_us, total_us;
} fm_prediction_row_t;

/* One ground-truth label sent back by a client (the feedback RPC). */
#define FM_FEEDBACK_SOURCE_MAX 64
typedef struct fm_feedback_row {
    uint8_t request_id[FM_UUID_BYTES];
    int image_index;     /* 0..32767 */
    int label;           /* 0..9 */
    int64_t received_us; /* wall clock (µs since the Unix epoch) when the server received it */
    const char *source;  /* NULL, or up to FM_FEEDBACK_SOURCE_MAX bytes naming who labelled it */
} fm_feedback_row_t;

/* Writes one predictions row (ending in '\n') into buf; returns its length,
 * FM_EINVAL (with the field named) for an out-of-range or non-finite value,
 * FM_ETRUNCATED when cap is too small. */
int fm_rows_prediction(char *buf, size_t cap, const fm_prediction_row_t *r);

/* Writes one sampled_inputs row for a 784-byte image with its features
 * (from fm_pixel_features); same returns. */
int fm_rows_sampled(char *buf, size_t cap, const uint8_t request_id[FM_UUID_BYTES], int image_index, int64_t ts_us,
                    const char *model_version, const uint8_t *image, const double features[FM_PIXEL_FEATURES]);

/* Binary COPY framing: the 19-byte header before the first row and the
 * 2-byte trailer after the last (each returns the bytes written). */
#define FM_ROWS_BINARY_HEADER_LEN 19
#define FM_ROWS_BINARY_TRAILER_LEN 2
size_t fm_rows_binary_header(uint8_t *buf);
size_t fm_rows_binary_trailer(uint8_t *buf);

/* The rows above in binary COPY format (same checks and returns). */
int fm_rows_prediction_binary(uint8_t *buf, size_t cap, const fm_prediction_row_t *r);
int fm_rows_sampled_binary(uint8_t *buf, size_t cap, const uint8_t request_id[FM_UUID_BYTES], int image_index, int64_t ts_us,
                           const char *model_version, const uint8_t *image, const double features[FM_PIXEL_FEATURES]);

/* Formats µs since the Unix epoch as "YYYY-MM-DD HH:MM:SS.ffffff+00" (32
 * bytes are enough); returns the length. */
int fm_rows_timestamp(char *buf, size_t cap, int64_t ts_us);

#endif /* FM_ROWS_H */
