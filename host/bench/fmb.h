/* fmb.h: fmbench's internal types, shared by its option parser (fmb_main.c),
 * load engine (fmb_load.c), accumulators (fmb_acc.c) and reports
 * (fmb_report.c). Not a public header: docs/fmbench.md is the contract. */
#ifndef FMB_H
#define FMB_H

#include <stddef.h>
#include <stdint.h>

#include "fm_arrivals.h"
#include "fm_dims.h"
#include "fm_hdr.h"
#include "fm_idx.h"

/* As in fm_msgpack.h (C11 allows the repeated typedef); fmb.h needs no msgpack. */
typedef struct msgpack_object fm_mp_obj_t;

#define FMB_MAX_STEPS 256
#define FMB_MAX_VERSIONS 4 /* stable and canary, and one swap of each during a run */
#define FMB_MAX_CODES 16
#define FMB_MAX_TAGS 32
#define FMB_MAX_WINDOWS 100
/* Latency histograms: 2^-10 relative error (0.1 %) from 1 µs to 2^36 µs. */
#define FMB_HDR_BITS 10
#define FMB_HDR_MAX_US ((uint64_t)1 << 36)
/* Per-version latency: 2^-7 (0.8 %) is enough for a side column. */
#define FMB_HDR_VERSION_BITS 7
/* A request sent later than this after its due time counts as late. */
#define FMB_LATE_US 1000

/* Exit codes (docs/fmbench.md). */
#define FMB_EXIT_OK 0
#define FMB_EXIT_FAILED 1     /* connection, non-retryable errors, server gone */
#define FMB_EXIT_USAGE 2
#define FMB_EXIT_WRONG 3      /* wrong answers: accuracy or consistency check failed */
#define FMB_EXIT_INTERRUPTED 130

typedef enum { FMB_CLOSED = 0, FMB_OPEN = 1 } fmb_mode_t;

typedef struct fmb_options {
    char host[256];
    int port;
    const char *server; /* as given */
    /* Images. */
    const char *data_dir, *split, *images_path, *labels_path;
    size_t limit;
    int batch; /* images per request */
    /* Requests. */
    int connections;
    int depth; /* open loop: most requests in flight per connection (0 = no limit) */
    const char *version, *key;
    int keys; /* distinct sticky keys cycled through (0 = none) */
    const char *token;
    uint32_t deadline_ms;
    /* Load. */
    int concurrency[FMB_MAX_STEPS];
    int nconcurrency;
    double rates[FMB_MAX_STEPS];
    int nrates;
    double fractions[FMB_MAX_STEPS]; /* open-loop rates as shares of the closed-loop peak */
    int nfractions;
    fm_arrivals_kind_t arrivals[2];
    int narrivals;
    uint64_t seed;
    double warmup_s, window_s, drain_timeout_s;
    int stable_windows, max_windows;
    double stability_pct;
    uint64_t max_outstanding;
    double latency_limit_ms; /* stop a sweep after a step whose p99 is above (0 = never) */
    int keep_going;          /* do not stop an open sweep at the first saturated step */
    /* Correctness. */
    double min_accuracy;
    double max_changed; /* share of answers allowed to differ from an earlier answer for the same image */
    /* Outputs. */
    const char *json, *csv, *plot, *out_prefix, *title, *commit;
    const char *tags[FMB_MAX_TAGS];
    int ntags;
    int quiet, progress; /* progress: -1 auto (terminal), 0 off, 1 on */
    char command[2048];  /* the command line, for the record */
} fmb_options_t;

/* Counts of replies by error code (the protocol's codes, plus the client's
 * CONNECTION_LOST and INCOMPLETE). */
typedef struct fmb_errs {
    char code[FMB_MAX_CODES][32];
    uint64_t n[FMB_MAX_CODES];
    int ncodes;
} fmb_errs_t;

typedef struct fmb_vacc {
    char version[64], role[16];
    uint64_t requests, images, labelled, correct;
    fm_hdr_t *lat;
} fmb_vacc_t;

/* What the requests attributed to a window (or a step) produced. Latency
 * histograms are in µs. */
typedef struct fmb_acc {
    fm_hdr_t *lat;      /* reply - due time (open loop) or send time (closed loop) */
    fm_hdr_t *service;  /* reply - actual send time */
    fm_hdr_t *queue;    /* server's queue_us */
    fm_hdr_t *compute;  /* server's compute_us */
    fm_hdr_t *overhead; /* service - compute_us: server overhead plus network (plus queueing under load) */
    fm_hdr_t *lag;      /* send time - due time (open loop) */
    uint64_t sent, ok, images_ok, late, incomplete;
    uint64_t labelled, correct, changed;
    fmb_errs_t errs;
    fmb_vacc_t ver[FMB_MAX_VERSIONS];
    int nver;
} fmb_acc_t;

int fmb_acc_init(fmb_acc_t *a);
void fmb_acc_free(fmb_acc_t *a);
int fmb_acc_add(fmb_acc_t *dst, const fmb_acc_t *src);
void fmb_errs_add(fmb_errs_t *e, const char *code, uint64_t n);
uint64_t fmb_errs_total(const fmb_errs_t *e);
/* The version slot for `version` in `a` (created; the last slot when full). */
fmb_vacc_t *fmb_acc_version(fmb_acc_t *a, const char *version, const char *role);
/* 1 for the protocol's retryable codes and the client's own load codes. */
int fmb_code_retryable(const char *code);

/* The stability rule: 1 when the last `n` of the `m` windows have both
 * throughput and p99 within `pct` percent, i.e. (max - min) <= pct/100 *
 * mean for each series. 0 when fewer than n windows exist. */
int fmb_stable(const double *rps, const double *p99, int m, int n, double pct);

/* The server's cumulative counters from one `stats` call, summed over versions. */
typedef struct fmb_snap {
    int valid;
    uint64_t images, batches, success, queue_us, compute_us;
} fmb_snap_t;

typedef struct fmb_step {
    /* What was asked. */
    fmb_mode_t mode;
    int concurrency;
    double target_rps;     /* 0 until resolved for a step given as a share of the peak */
    double rate_fraction;  /* --rate-of-peak share, 0 for a fixed rate */
    fm_arrivals_kind_t arrivals;
    /* What happened. */
    int ran; /* measured (a skipped or never reached step is not) */
    int windows_run, windows_used, stable, saturated, timed_out, aborted;
    double win_rps[FMB_MAX_WINDOWS], win_p99_us[FMB_MAX_WINDOWS];
    double seconds;            /* sum of the used windows' lengths */
    uint64_t done_requests, done_images; /* successful replies that arrived during the used windows */
    uint64_t sends;                      /* requests written during the used windows */
    double rps, ips, sent_rps;
    fmb_acc_t acc;             /* requests due/sent during the used windows */
    fmb_snap_t snap0, snap1;   /* server counters around the used windows */
    double avg_batch;          /* images per batch on the server over the used windows (0 unknown) */
    int connections_used;
    char note[256];
} fmb_step_t;

/* Per image and version: the first answer seen, to check that later answers
 * agree and to compute the accuracy over the whole image set. */
typedef struct fmb_answers {
    char version[64], role[16];
    int8_t *label; /* n entries, -1 = not answered yet */
    size_t covered, correct;
} fmb_answers_t;

typedef struct fmb_run {
    const fmb_options_t *o;
    fm_dataset_t ds;
    int labelled;
    char source[600];
    fmb_step_t steps[FMB_MAX_STEPS];
    int nsteps;           /* planned */
    int ndone;            /* measured */
    fmb_answers_t answers[FMB_MAX_VERSIONS];
    int nanswers;
    int interrupted;
    double peak_rps;      /* highest closed-loop throughput, once --rate-of-peak steps resolved it */
    char peak_label[64];
    char fatal[512];      /* why the run stopped early (empty when it did not) */
    char failures[8][512];
    int nfailures;
    int wrong;            /* a correctness check failed */
    /* Server description: JSON text of the replies of `models` and `stats`. */
    char *models_json, *stats_start_json, *stats_end_json;
    char date[32];
    double load_start[3], load_end[3];
} fmb_run_t;

/* fmb_load.c: connects, runs every planned step, fills run->steps. Returns
 * 0, or a negative code when the run could not continue (run->fatal says
 * why; the steps done so far are kept). */
int fmb_load_run(fmb_run_t *run);

/* fmb_answers: records one answer; returns 1 when it differs from an earlier one. */
int fmb_answer(fmb_run_t *run, const char *version, const char *role, size_t index, int label);

/* fmb_report.c */
void fmb_print_header(const fmb_run_t *run);
void fmb_print_step(const fmb_run_t *run, const fmb_step_t *s);
void fmb_print_summary(const fmb_run_t *run);
int fmb_write_json(const fmb_run_t *run, const char *path);
int fmb_write_csv(const fmb_run_t *run, const char *path);
/* 0 written; 1 skipped (no gnuplot, said why); < 0 failed. */
int fmb_write_plot(const fmb_run_t *run, const char *path);
/* A short label of a step's load: "c=8" or "500/s poisson". */
void fmb_step_label(const fmb_step_t *s, char *buf, size_t cap);
/* The build's commit (or the --commit override). */
const char *fmb_commit(const fmb_options_t *o);
/* A decoded server reply as JSON text (malloc'd; NULL and a detail on failure). */
char *fmb_mp_to_json_text(const fm_mp_obj_t *o);

#endif /* FMB_H */
