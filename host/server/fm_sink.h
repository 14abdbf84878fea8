/* fm_sink.h: the prediction sink interface: how something outside the
 * request path (the PostgreSQL prediction log, an image sampler) sees every
 * completed prediction.
 *
 * Threading and cost: on_prediction runs on the event-loop thread, once per
 * completed predict request, after its reply is queued for the client. It
 * must not block: copy what it needs into its own bounded queue and hand the
 * slow work (database writes) to another thread or to a non-blocking
 * connection watched by the loop; shed and count when the queue is full.
 *
 * Ownership: everything a fm_prediction_t or fm_feedback_t points to
 * (strings, result arrays, pixels) belongs to the server and is valid only
 * during the call. The server owns no sink: it calls close() once at
 * shutdown, after the loop has stopped and after the last on_prediction;
 * close may take its time (the server has nothing left to serve). */
#ifndef FM_SINK_H
#define FM_SINK_H

#include <stddef.h>
#include <stdint.h>

typedef struct fm_prediction {
    const char *request_id;    /* UUIDv7 text, 36 characters, time-ordered */
    int64_t received_wall_us;  /* wall clock (µs since the Unix epoch) when the request was read */
    const char *role;          /* "stable" or "canary" */
    const char *model_name;    /* e.g. "fashion-mnist-mlp" */
    const char *model_version; /* e.g. "v1" */
    const char *model_sha256;  /* of model.safetensors: the exact weights */
    const char *routing;       /* "ab", "sticky" or "pinned" */
    const char *key;           /* the sticky key, or NULL */
    size_t key_len;
    size_t n;                  /* images */
    const int32_t *labels;     /* n classes */
    const float *confidence;   /* n probabilities of the chosen class */
    const float *probs;        /* n * 10 probabilities (always present) */
    uint64_t queue_us;         /* read -> first image dispatched to a batch */
    uint64_t compute_us;       /* sum over the batches that held its images */
    uint64_t total_us;         /* read -> reply queued */
    int client_connected;      /* 0 when the client left before the reply */
    /* The pixels: either one block of n * 784 bytes or one pointer per image.
     * Use fm_prediction_image(). */
    const uint8_t *pixels;
    const uint8_t *const *images;
} fm_prediction_t;

/* The i-th image's 784 bytes (valid during on_prediction only). */
static inline const uint8_t *fm_prediction_image(const fm_prediction_t *p, size_t i) {
    return p->pixels ? p->pixels + i * 784 : p->images[i];
}

/* Ground truth a client sent back for an earlier prediction (the feedback
 * RPC), already checked by the server: request_id is 36 characters of UUID
 * text, image_index is within max_images_per_request, label is 0..9,
 * source is NULL or 1..64 bytes. Valid during on_feedback only. */
typedef struct fm_feedback {
    const char *request_id; /* 36 characters, not NUL-terminated */
    uint32_t image_index;
    int label;
    const char *source; /* not NUL-terminated; NULL when absent */
    size_t source_len;
    int64_t received_wall_us; /* wall clock (µs since the Unix epoch) when the server read it */
} fm_feedback_t;

/* Where a sink writes its /metrics lines (Prometheus text format). */
typedef void (*fm_sink_emit_fn)(void *ctx, const char *text, size_t len);

typedef struct fm_sink {
    const char *name; /* for logs */
    void (*on_prediction)(struct fm_sink *self, const fm_prediction_t *p);
    void (*close)(struct fm_sink *self); /* may be NULL */
    /* Optional (may be NULL), on the loop thread like on_prediction. Returns
     * 0 when the feedback is taken (queued for its store), FM_EOVERLOADED
     * when the sink cannot take it now (the client is told to retry), or
     * another negative FM_E* code with an fm_fail detail. */
    int (*on_feedback)(struct fm_sink *self, const fm_feedback_t *f);
    /* Optional: appends the sink's own series to /metrics, on the loop
     * thread, without blocking. */
    void (*metrics)(struct fm_sink *self, fm_sink_emit_fn emit, void *ctx);
} fm_sink_t;

#endif /* FM_SINK_H */
