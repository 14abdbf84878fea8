/* fm_server_int.h: the server's internal structures and the functions its
 * files share. Not for use outside host/server.
 *
 * Threads: one event-loop thread owns every structure here except the two
 * job queues (work and done), which are guarded by their mutexes; worker
 * threads and backend completion threads touch only a job's batch buffers
 * and read (never write) the request pixels its segments point to.
 *
 * Ownership, in one place:
 *  - fm_conn_t: allocated on accept, freed in its uv_close callback. Its live
 *    requests point back to it; closing a connection unhooks them
 *    (req->conn = NULL) and cancels those whose images have not been
 *    dispatched yet.
 *  - fm_req_t (a predict request): allocated with its result arrays in one
 *    block when the frame is accepted; owns the decoded frame (msgpack zone),
 *    which keeps the socket read buffer holding its pixels alive. Freed by
 *    fm_req_release after its reply is queued (or its client left) and no
 *    batch still reads its pixels (dispatched == done).
 *  - fm_slot_t (a prepared model version): reference counted on the loop
 *    thread: the role table, each queued request and each in-flight batch
 *    hold one. Freed (backend model released, model freed) at zero.
 *  - fm_job_t (a batch): a fixed pool made at start, one per executor; the
 *    batch buffers come from fm_engine_host_alloc (pinned memory on CUDA)
 *    and live as long as the server.
 *  - reply bytes: packed into conn->out; flushed once per loop iteration,
 *    just before the loop polls (uv_prepare), by uv_try_write, and what the kernel does not take moves,
 *    buffer and all, into a write request freed in its callback. */
#ifndef FM_SERVER_INT_H
#define FM_SERVER_INT_H

#include <pthread.h>
#include <stdint.h>
#include <uv.h>

#include "fm_backend.h"
#include "fm_config.h"
#include "fm_msgpack.h"
#include "fm_proto.h"
#include "fm_server.h"
#include "fm_sink.h"

typedef struct fm_conn fm_conn_t;
typedef struct fm_req fm_req_t;
typedef struct fm_slot fm_slot_t;
typedef struct fm_job fm_job_t;

typedef enum { FM_ROUTE_AB = 0, FM_ROUTE_STICKY = 1, FM_ROUTE_PINNED = 2, FM_NROUTES = 3 } fm_route_t;
const char *fm_route_name(fm_route_t r);

/* Failure reasons counted per model: the protocol codes, plus a client that
 * left before its images were computed. */
#define FM_REASON_CANCELLED FM_PROTO_NCODES
#define FM_NREASONS (FM_PROTO_NCODES + 1)

/* ---- Metrics (fm_metrics.c) ---- */
#define FM_BATCH_BUCKETS 14  /* 1, 2, 4, ... 4096, +Inf */
#define FM_LATENCY_BUCKETS 16

typedef struct fm_model_stats {
    char role[8], name[64], version[64];
    uint64_t success, failure[FM_NREASONS];
    uint64_t images, batches;
    uint64_t queue_us, compute_us, request_us; /* sums over successful requests */
    uint64_t batch_compute_us;                 /* sum over batches */
    uint64_t routed[FM_NROUTES];
    uint64_t batch_hist[FM_BATCH_BUCKETS];
    uint64_t batch_images;
    uint64_t latency_hist[FM_LATENCY_BUCKETS];
    struct fm_model_stats *next;
} fm_model_stats_t;

typedef struct fm_metrics {
    fm_model_stats_t *models;
    uint64_t conns_accepted, conns_rejected;
    uint64_t http_requests;
    uint64_t rpc_calls[16];           /* per method, method table order */
    uint64_t rpc_errors[FM_PROTO_NCODES];
    uint64_t protocol_errors;
    uint64_t reloads_ok, reloads_failed;
    uint64_t rx_bytes, tx_bytes;
    uint64_t backpressure_pauses;
    uint64_t sink_calls;
} fm_metrics_t;

fm_model_stats_t *fm_metrics_model(fm_metrics_t *m, const char *role, const char *name, const char *version);
void fm_metrics_free(fm_metrics_t *m);
void fm_metrics_batch(fm_model_stats_t *s, size_t images, uint64_t compute_us);
void fm_metrics_request_ok(fm_model_stats_t *s, uint64_t queue_us, uint64_t compute_us, uint64_t total_us);
/* The Prometheus text exposition of everything (fm_http.c serves it). */
void fm_metrics_render(fm_server_t *srv, fm_mp_buf_t *out);

/* ---- Model slots (fm_slots.c) ---- */
struct fm_slot {
    int refs;
    fm_role_t role;
    fm_model_t *model;
    fm_backend_model_t *bm;
    char name[64], version[64], sha256[65], dir[512], arch[8];
    int64_t loaded_wall_us;
    /* Requests with images not yet dispatched, oldest first. */
    fm_req_t *qhead, *qtail;
    size_t queued_images, queued_requests;
    int inflight_batches;
    fm_model_stats_t *stats;
    int retired;      /* no longer the role's active version */
    fm_slot_t *next;  /* the server's list of live slots */
};

void fm_slot_ref(fm_slot_t *s);
void fm_slot_unref(fm_server_t *srv, fm_slot_t *s);
/* Loads and prepares a model with a warm-up batch; any thread. */
int fm_slot_load(fm_server_t *srv, fm_role_t role, const char *dir, fm_slot_t **out);
/* Makes `slot` (NULL: nothing) the active version of `role`, on the loop. */
void fm_slot_install(fm_server_t *srv, fm_role_t role, fm_slot_t *slot);
void fm_slot_destroy(fm_server_t *srv, fm_slot_t *s);

/* ---- Requests (fm_methods.c) ---- */
struct fm_req {
    fm_server_t *srv;
    fm_conn_t *conn; /* NULL once the client is gone */
    uint64_t msgid;
    int notify;      /* a notification: computed and logged, never answered */
    fm_req_t *cprev, *cnext; /* the connection's live requests */
    fm_req_t *qprev, *qnext; /* the slot queue */
    int queued;
    fm_mp_msg_t *msg; /* owns the pixels */
    const uint8_t *pixels;        /* n * 784 contiguous bytes, or NULL */
    const uint8_t *const *images; /* one pointer per image, or NULL */
    uint32_t n, next, done;       /* images; dispatched; completed */
    fm_slot_t *slot;
    fm_route_t route;
    int want_probs;
    const char *key;
    size_t key_len;
    uint64_t t_arrival, t_dispatch, deadline; /* monotonic µs; deadline 0 = none */
    uint64_t compute_us;
    int64_t wall_arrival;
    int status; /* first failure of a batch holding its images */
    char request_id[40];
    int32_t *labels;
    float *confidence;
    float *probs; /* n * 10 */
};

static inline const uint8_t *fm_req_image(const fm_req_t *r, uint32_t i) {
    return r->pixels ? r->pixels + (size_t)i * 784 : r->images[i];
}

/* Handles one decoded frame from a connection (takes ownership of msg). */
void fm_rpc_handle_frame(fm_conn_t *c, fm_mp_msg_t *msg);
/* All images of `req` are computed (or failed): reply, log, release. */
void fm_req_complete(fm_req_t *req);
/* Fails a request none of whose images were dispatched. */
void fm_req_fail(fm_req_t *req, fm_proto_code_t code, const char *message);
/* Its client is gone: cancel it if nothing was dispatched, else let the
 * batches finish and drop the reply. */
void fm_req_orphan(fm_req_t *req);
/* Method names in table order, for metrics. */
const char *fm_rpc_method_name(int i);
int fm_rpc_method_count(void);

/* ---- Batching (fm_batcher.c) ---- */
typedef struct fm_seg {
    fm_req_t *req;
    uint32_t first, count;
} fm_seg_t;

struct fm_job {
    fm_batch_t batch; /* buffers from fm_engine_host_alloc */
    fm_server_t *srv;
    fm_slot_t *slot;
    fm_seg_t *segs;
    uint32_t nsegs;
    uint64_t t_dispatch, t_start, t_end;
    int status;
    char detail[200];
    fm_job_t *next;
};

int fm_batcher_init(fm_server_t *srv);
void fm_batcher_shutdown(fm_server_t *srv);
/* Queues a routed request (the admission checks were done). */
void fm_batcher_enqueue(fm_server_t *srv, fm_req_t *req);
/* Takes a request that has no images dispatched out of its slot queue. */
void fm_batcher_unqueue(fm_server_t *srv, fm_req_t *req);
/* Forms and starts batches while executors are free. */
void fm_batcher_pump(fm_server_t *srv);
/* Answers every queued request with `code` (drain timeout). */
void fm_batcher_fail_queued(fm_server_t *srv, fm_proto_code_t code, const char *message);

/* ---- Connections (fm_conn.c) ---- */
#define FM_AUTH_NONE 0
#define FM_AUTH_USER 1
#define FM_AUTH_ADMIN 2

struct fm_conn {
    uv_tcp_t tcp; /* first member */
    fm_server_t *srv;
    uint64_t id;
    fm_mp_reader_t *reader;
    fm_mp_buf_t out;      /* replies not yet handed to the kernel */
    size_t write_pending; /* bytes inside uv_write requests */
    int inflight;         /* requests read and not yet answered */
    int reading, eof, closing, close_after_flush, in_flush, resume;
    int auth;
    fm_req_t *reqs;
    fm_conn_t *prev, *next;
    fm_conn_t *flush_next;
    char peer[96];
};

void fm_conn_on_connection(uv_stream_t *listener, int status);
/* The buffer to pack one reply into, or NULL when the connection is closing
 * (then the caller drops the reply but still calls fm_conn_reply_end). */
fm_mp_buf_t *fm_conn_reply_begin(fm_conn_t *c);
/* One request of this connection is answered (or dropped). */
void fm_conn_reply_end(fm_conn_t *c, int was_request);
/* Replies to a frame that cannot be served and closes after flushing. */
void fm_conn_protocol_error(fm_conn_t *c, int have_msgid, uint64_t msgid, const char *message);
void fm_conn_close(fm_conn_t *c);
/* uv_prepare: resumes paused connections and writes every connection's
 * pending replies, once per loop iteration just before it polls. */
void fm_conn_flush_all(uv_prepare_t *h);
/* 1 when no connection has reply bytes left to write. */
int fm_conn_all_flushed(fm_server_t *srv);
/* Closes every connection (end of a drain). */
void fm_conn_close_all(fm_server_t *srv);

/* ---- HTTP (fm_http.c) ---- */
void fm_http_on_connection(uv_stream_t *listener, int status);
void fm_http_close_all(fm_server_t *srv);

/* ---- Routing, ids (fm_router.c) ---- */
/* Picks the slot for a request: by pin ("stable", "canary", a version id),
 * else by the key's hash, else at random with the A/B ratio. Returns 0,
 * FM_ENOTFOUND (no such version) or FM_EUNAVAILABLE (no model loaded). */
int fm_route(fm_server_t *srv, const char *pin, size_t pin_len, const char *key, size_t key_len, fm_slot_t **slot,
             fm_route_t *route, char *why, size_t why_cap);
/* The key's position in [0, 1): the first 8 bytes of its SHA-256, big
 * endian, divided by 2^64 (documented so other routers can agree). */
double fm_route_key_point(const char *key, size_t len);
/* A UUIDv7 text (36 characters + NUL), strictly increasing in this process. */
void fm_uuid7(fm_server_t *srv, char out[40]);

/* ---- The server ---- */
typedef struct http_conn http_conn_t;

struct fm_server {
    fm_config_t cfg;
    uv_loop_t loop;
    uv_tcp_t rpc_listener, http_listener;
    int rpc_listening, http_listening;
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_prepare_t flush_prepare;
    uv_async_t done_async;
    uv_timer_t batch_timer, deadline_timer, drain_timer;
    uint64_t batch_timer_at, deadline_timer_at; /* 0 = not armed */
    fm_engine_t engine;
    int engine_open, async_backend;
    fm_mp_limits_t limits;

    fm_slot_t *active[FM_NROLES];
    fm_slot_t *slots;
    int loading[FM_NROLES];

    /* Settings that can change at run time. */
    double ab_ratio;
    double cfg_ab_ratio; /* the configured value last applied */
    int max_queue_delay_us, max_queue_size;

    /* Batches. */
    fm_job_t *jobs;
    int njobs, jobs_inflight;
    fm_job_t *free_jobs;
    pthread_t *workers;
    int nworkers;
    pthread_mutex_t work_mu;
    pthread_cond_t work_cv;
    fm_job_t *work_head, *work_tail;
    int work_stop;
    pthread_mutex_t done_mu;
    fm_job_t *done_head, *done_tail;
    int batcher_ready;
    unsigned rr_turn; /* round robin across versions with a batch ready */

    /* Connections. */
    fm_conn_t *conns;
    int nconns;
    uint64_t next_conn_id;
    fm_conn_t *flush_list;
    http_conn_t *http_conns;
    int nhttp;

    /* State. */
    int ready, draining, stopping, exit_code, drain_timed_out, drain_forced;
    int reload_running, reload_again;
    size_t live_requests; /* accepted predict requests not yet released */
    uint64_t started_us;
    int64_t started_wall_us;
    int rpc_port, http_port;
    char backend_desc[256];

    /* Routing and ids. */
    uint64_t rng[2];
    uint64_t uuid_last_ms;
    uint32_t uuid_seq;

    fm_metrics_t metrics;
    fm_sink_t *sinks[8];
    int nsinks;

    /* Registry follower (fm_server_set_registry_status, fm_server_add_stop_hook). */
    int registry_enabled;
    fm_registry_status_t registry;
    fm_server_stop_fn stop_hooks[4];
    void *stop_hook_users[4];
    int nstop_hooks, stop_hooks_ran;
};

/* 1 when the server can take predictions (models loaded, not draining). */
int fm_server_is_ready(const fm_server_t *srv, const char **why);
/* Called whenever work finishes while draining: exits when all is done. */
void fm_server_drain_check(fm_server_t *srv);
uint64_t fm_server_rand(fm_server_t *srv);

#endif /* FM_SERVER_INT_H */
