/* fm_pixel_stats.h: what the prediction-log writer computes before rows reach
 * PostgreSQL: the six summary features of each sampled image (sampled_inputs
 * columns), and the rollup deltas of its batches per (60 s bucket, model
 * version): the per-pixel value counts of the sampled images, which
 * fm_pixel_delta_apply() adds to pixel_rollups, and the counts of the model's
 * outputs (class, confidence on a 1/10000 grid), which
 * fm_prediction_delta_apply() adds to rollup_buckets. Pure C, no database
 * access; see docs/database.md.
 *
 * Ownership: histograms and delta sets are allocated by their _new functions
 * and freed by _free; a histogram returned by fm_rollup_deltas_get belongs to
 * the set and is valid until the entry is removed or the set cleared. */
#ifndef FM_PIXEL_STATS_H
#define FM_PIXEL_STATS_H

#include <stddef.h>
#include <stdint.h>

#define FM_PIXEL_COUNT 784
#define FM_PIXEL_VALUES 256
#define FM_PIXEL_FEATURES 6
/* Width of the ingestion buckets (fm_bucket_width() in SQL), microseconds. */
#define FM_PIXEL_BUCKET_US (60LL * 1000000LL)

/* Feature names, in the order of fm_pixel_features' output and of the
 * sampled_inputs columns: mean_intensity, std_intensity, nonzero_share,
 * bright_share, centroid_row, centroid_col. */
extern const char *const fm_pixel_feature_names[FM_PIXEL_FEATURES];

/* The six features of one 28x28 image. Each is one correctly rounded
 * division (std: and a square root) of exact integer sums, so the SQL twin
 * fm_image_features() and numpy give the same bits:
 *   mean_intensity  S/784                 (S = Σ p, pixel values 0..255)
 *   std_intensity   sqrt((784·Q - S²)/784²) rounded to 0.01  (Q = Σ p²)
 *   nonzero_share   #(p > 0)/784
 *   bright_share    #(p >= 128)/784
 *   centroid_row    Σ row·p / S rounded to 0.01  (13.5 when S = 0)
 *   centroid_col    Σ col·p / S rounded to 0.01  (13.5 when S = 0)
 * Rounding is to nearest, ties to even (nearbyint), on x·100, then /100: a
 * window then holds a few thousand distinct values per feature instead of
 * one per image, which keeps drift checks fast. */
void fm_pixel_features(const uint8_t *image, double out[FM_PIXEL_FEATURES]);

/* counts[pixel * 256 + v]: how many of the added images have value v at
 * `pixel`. 800 KB; allocate with fm_pixel_hist_new. */
typedef struct fm_pixel_hist {
    uint64_t images;
    uint32_t counts[FM_PIXEL_COUNT * FM_PIXEL_VALUES];
} fm_pixel_hist_t;

fm_pixel_hist_t *fm_pixel_hist_new(void); /* zeroed; NULL when out of memory */
void fm_pixel_hist_free(fm_pixel_hist_t *h);
void fm_pixel_hist_reset(fm_pixel_hist_t *h);
/* Adds n images (n * 784 bytes, image after image). */
void fm_pixel_hist_add(fm_pixel_hist_t *h, const uint8_t *images, size_t n);
/* dst += src. */
void fm_pixel_hist_merge(fm_pixel_hist_t *dst, const fm_pixel_hist_t *src);
/* The histogram as a PostgreSQL array literal "{c0,c1,...,c200703}", the
 * p_counts argument of fm_pixel_delta_apply() (malloc'd, NUL-terminated;
 * *len receives its length; NULL when out of memory). */
char *fm_pixel_hist_sql_array(const fm_pixel_hist_t *h, size_t *len);

/* The confidence grid of the rollups: round(c·10000), ties to even
 * (fm_confidence_q() in SQL); 0..10000. */
#define FM_CONF_GRID 10000
int fm_confidence_q(float confidence);

/* Counts of the model's outputs in a bucket. 40 KB. */
typedef struct fm_pred_hist {
    uint64_t predictions;
    uint64_t classes[10];
    uint32_t conf[FM_CONF_GRID + 1]; /* conf[q]: predictions with fm_confidence_q = q */
} fm_pred_hist_t;

/* The three array literals fm_prediction_delta_apply() takes: class counts
 * "{n0,...,n9}", and the grid indexes with a count with their counts
 * ("{q,...}", "{n,...}"), ascending. Each malloc'd; 0 or FM_ENOMEM. */
int fm_pred_hist_sql_arrays(const fm_pred_hist_t *h, char **classes, char **conf_q, char **conf_n);

/* The start of the 60 s bucket holding a wall-clock time (µs since the Unix
 * epoch), as fm_bucket_start() computes it in SQL. */
int64_t fm_pixel_bucket_start_us(int64_t ts_us);

/* Rollup deltas of a writer, one entry per (bucket, model version): a
 * pixel histogram of the sampled images and a prediction histogram. */
typedef struct fm_rollup_deltas fm_rollup_deltas_t;

/* `max_keys` bounds how many (bucket, version) pairs the set holds (each
 * costs 840 KB); a batch normally spans one or two. */
fm_rollup_deltas_t *fm_rollup_deltas_new(int max_keys);
void fm_rollup_deltas_free(fm_rollup_deltas_t *d);
/* Counts one sampled image taken at ts_us by `model_version`. FM_EOVERLOADED
 * when the set would hold more than max_keys pairs; FM_EINVAL for a version
 * missing or longer than 127 bytes. */
int fm_rollup_deltas_add(fm_rollup_deltas_t *d, int64_t ts_us, const char *model_version, const uint8_t *image);
/* Counts one prediction (label 0..9, confidence in [0, 1]); same errors,
 * and FM_EINVAL for a label or confidence out of range. */
int fm_rollup_deltas_add_prediction(fm_rollup_deltas_t *d, int64_t ts_us, const char *model_version, int label,
                                    float confidence);
int fm_rollup_deltas_count(const fm_rollup_deltas_t *d);
/* The i-th delta (0 <= i < count); pred may be NULL. */
void fm_rollup_deltas_get(const fm_rollup_deltas_t *d, int i, int64_t *bucket_start_us, const char **model_version,
                          const fm_pixel_hist_t **hist, const fm_pred_hist_t **pred);
/* Adds another entry's histograms (either may be NULL) to the (bucket,
 * version) entry, creating it when missing (same errors as
 * fm_rollup_deltas_add). */
int fm_rollup_deltas_add_hist(fm_rollup_deltas_t *d, int64_t bucket_start_us, const char *model_version,
                              const fm_pixel_hist_t *h, const fm_pred_hist_t *pred);
/* Forgets the i-th delta (the last one takes its place). */
void fm_rollup_deltas_remove(fm_rollup_deltas_t *d, int i);
/* Forgets every delta (after they were applied), keeping the memory. */
void fm_rollup_deltas_clear(fm_rollup_deltas_t *d);

#endif /* FM_PIXEL_STATS_H */
