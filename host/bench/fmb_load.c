/* fmb_load.c: fmbench's load engine on one libuv loop: the connections
 * (through fm_aclient), closed-loop slots and the open-loop pacer, the
 * measurement windows with their stability rule, and the step sequence.
 *
 * Attribution: a request belongs to the window during which it was due
 * (open loop: its scheduled time) or sent (closed loop); its latency,
 * server times, errors and answers go to that window whenever the reply
 * arrives, and a window is final only when all of its requests are answered
 * (or given up at the drain timeout, counted INCOMPLETE with the time waited
 * so far as a lower bound). Throughput counts the successful replies that
 * arrive while a window is open. Open-loop latency runs from the scheduled
 * time, so time a request spent waiting to be sent is never hidden. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <unistd.h>
#include <uv.h>

#include "fm_aclient.h"
#include "fm_error.h"
#include "fm_time.h"
#include "fmb.h"

typedef struct load load_t;

typedef struct conn {
    load_t *L;
    fm_aclient_t *c;
    int index;
    size_t inflight;
} conn_t;

/* A measurement window, or the warm-up (measured too, but used only when
 * the step saturates before its first real window). */
typedef struct window {
    int index;
    int warmup;
    int number; /* 1.. for real windows, 0 for the warm-up */
    uint64_t t0, t1; /* ns */
    int closed, final, discarded;
    uint64_t outstanding;
    uint64_t done_requests, done_images; /* successful replies that arrived while it was open */
    uint64_t sends;                      /* requests written while it was open */
    fmb_acc_t acc;
    fmb_snap_t snap0, snap1;
} window_t;

typedef struct req {
    struct req *next, *prev;
    window_t *win;
    conn_t *conn;
    uint64_t due_ns, sent_ns;
    size_t first;
} req_t;

typedef enum { P_CONNECT, P_WARMUP, P_MEASURE, P_TAIL, P_STOP, P_DONE } phase_t;

struct load {
    fmb_run_t *run;
    const fmb_options_t *o;
    uv_loop_t loop;
    uv_timer_t phase_timer, drain_timer, progress_timer;
    uv_poll_t pacer;
    int tfd; /* timerfd behind the pacer: µs precision where libuv timers have ms */
    uv_signal_t sigint;
    conn_t *conns;
    int nconns, connected, closing_conns;
    fm_aclient_t *ctl;
    int ctl_inflight;
    int shutting_down;

    /* The step being run. */
    int si;
    fmb_step_t *step;
    phase_t phase;
    int loading, resetting;
    window_t *win; /* max_windows + 1 (the warm-up) */
    int nwin, nmeasured;
    window_t *cur, *last_final;

    /* Requests: in flight (doubly linked), backlog (due, not sent: FIFO), free list. */
    req_t inflight_head;
    uint64_t inflight;
    req_t *backlog_head, *backlog_tail, *free_list;
    uint64_t backlog;

    /* Open loop. */
    fm_arrivals_t arr;
    uint64_t origin_ns;
    double next_rel_ns;
    int rr;

    /* Images and keys. */
    size_t cursor;
    uint64_t key_counter;
    uint8_t *scratch;
    int32_t *labels;
    char key[64];
    int tty;
};

static void step_start(load_t *L);
static void maybe_finish(load_t *L);
static void end_measuring(load_t *L);
static void send_next(load_t *L, conn_t *cn, uint64_t due_ns);
static void send_req(load_t *L, conn_t *cn, req_t *r);
static void connect_all(load_t *L);
static void arm_drain(load_t *L);
static void window_settle(load_t *L, window_t *w);
static void give_up(load_t *L, int inflight_too);

/* ---- Failures and shutdown ------------------------------------------------ */

static void on_handle_closed(uv_handle_t *h) {
    load_t *L = h->data;
    if (h == (uv_handle_t *)&L->pacer && L->tfd >= 0) {
        close(L->tfd);
        L->tfd = -1;
    }
}

static void on_conn_closed(void *user) {
    load_t *L = user;
    L->closing_conns--;
    if (L->resetting && !L->shutting_down && L->closing_conns == 0) {
        /* Every connection of the reset is gone: open them again. */
        L->resetting = 0;
        L->phase = P_CONNECT;
        L->connected = 0;
        connect_all(L);
    }
}

static void close_conns(load_t *L) {
    for (int i = 0; i < L->nconns; i++)
        if (L->conns[i].c) {
            fm_aclient_t *c = L->conns[i].c;
            L->conns[i].c = NULL;
            L->closing_conns++;
            fm_aclient_close(c, on_conn_closed, L);
        }
}

static void shutdown_all(load_t *L) {
    if (L->shutting_down)
        return;
    L->shutting_down = 1;
    L->loading = 0;
    L->phase = P_DONE;
    close_conns(L);
    if (L->ctl) {
        fm_aclient_t *c = L->ctl;
        L->ctl = NULL;
        fm_aclient_close(c, NULL, NULL);
    }
    uv_handle_t *hs[] = {(uv_handle_t *)&L->phase_timer, (uv_handle_t *)&L->drain_timer,
                         (uv_handle_t *)&L->progress_timer, (uv_handle_t *)&L->pacer, (uv_handle_t *)&L->sigint};
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++)
        if (!uv_is_closing(hs[i]))
            uv_close(hs[i], on_handle_closed);
}

static void fatal(load_t *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fatal(load_t *L, const char *fmt, ...) {
    if (!L->run->fatal[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(L->run->fatal, sizeof L->run->fatal, fmt, ap);
        va_end(ap);
    }
    shutdown_all(L);
}

/* ---- Requests -------------------------------------------------------------- */

static req_t *req_new(load_t *L) {
    req_t *r = L->free_list;
    if (r)
        L->free_list = r->next;
    else if (!(r = malloc(sizeof *r)))
        return NULL;
    memset(r, 0, sizeof *r);
    return r;
}

static void req_free(load_t *L, req_t *r) {
    r->next = L->free_list;
    L->free_list = r;
}

static void inflight_link(load_t *L, req_t *r) {
    r->next = L->inflight_head.next;
    r->prev = &L->inflight_head;
    L->inflight_head.next->prev = r;
    L->inflight_head.next = r;
    L->inflight++;
}

static void inflight_unlink(load_t *L, req_t *r) {
    r->prev->next = r->next;
    r->next->prev = r->prev;
    r->next = r->prev = NULL;
    L->inflight--;
}

static void attribute(load_t *L, req_t *r) {
    r->win = L->cur;
    if (r->win) {
        r->win->outstanding++;
        r->win->acc.sent++;
    }
}

/* ---- Answers --------------------------------------------------------------- */

int fmb_answer(fmb_run_t *run, const char *version, const char *role, size_t index, int label) {
    fmb_answers_t *a = NULL;
    for (int i = 0; i < run->nanswers; i++)
        if (!strcmp(run->answers[i].version, version))
            a = &run->answers[i];
    if (!a) {
        if (run->nanswers == FMB_MAX_VERSIONS)
            return 0;
        a = &run->answers[run->nanswers];
        a->label = malloc(run->ds.n);
        if (!a->label)
            return 0;
        memset(a->label, -1, run->ds.n);
        snprintf(a->version, sizeof a->version, "%s", version);
        snprintf(a->role, sizeof a->role, "%s", role);
        run->nanswers++;
    }
    if (a->label[index] < 0) {
        a->label[index] = (int8_t)label;
        a->covered++;
        if (run->labelled && run->ds.labels[index] == label)
            a->correct++;
        return 0;
    }
    return a->label[index] != label;
}

/* ---- Replies ---------------------------------------------------------------- */

static uint64_t us_of(uint64_t ns) { return (ns + 500) / 1000; }

static void count_error(load_t *L, window_t *w, const char *code, const char *message) {
    if (w)
        fmb_errs_add(&w->acc.errs, code, 1);
    if (!fmb_code_retryable(code))
        fatal(L, "the server answered %s: %s (not a load effect: check the options)", code, message);
}

static void on_reply(fm_aclient_t *c, int status, const fm_mp_obj_t *error, const fm_mp_obj_t *result,
                     uint64_t latency_us, void *user) {
    req_t *r = user;
    conn_t *cn = r->conn;
    load_t *L = cn->L;
    fmb_run_t *run = L->run;
    const fmb_options_t *o = L->o;
    (void)c;
    (void)latency_us;
    uint64_t now = fm_now_ns();
    inflight_unlink(L, r);
    cn->inflight--;
    window_t *w = r->win;
    if (w && w->discarded)
        w = NULL;
    if (status != 0) {
        /* Cancelled by a reset or shutdown (nothing to count), or the
         * connection broke under us. */
        if (!L->resetting && !L->shutting_down) {
            if (w)
                fmb_errs_add(&w->acc.errs, "CONNECTION_LOST", 1);
            fatal(L, "connection %d to %s lost: %s", cn->index, o->server, fm_last_error());
        }
        if (r->win && !r->win->discarded) {
            r->win->outstanding--;
            window_settle(L, r->win);
        }
        req_free(L, r);
        return;
    }
    if (error) {
        fm_proto_error_t e;
        fm_proto_read_error(error, &e);
        count_error(L, w, e.code, e.message);
    } else {
        fm_predict_result_t pr;
        memset(&pr, 0, sizeof pr);
        pr.labels = L->labels;
        if (fm_proto_read_predict(result, (size_t)o->batch, &pr) != 0) {
            count_error(L, w, "BAD_REPLY", fm_last_error());
        } else if (pr.n != (size_t)o->batch) {
            char m[96];
            snprintf(m, sizeof m, "%zu predictions for %d images", pr.n, o->batch);
            count_error(L, w, "BAD_REPLY", m);
        } else {
            uint64_t labelled = 0, correct = 0, changed = 0;
            for (size_t i = 0; i < pr.n; i++) {
                size_t idx = (r->first + i) % run->ds.n;
                changed += (uint64_t)fmb_answer(run, pr.model_version, pr.model, idx, pr.labels[i]);
                if (run->labelled) {
                    labelled++;
                    correct += run->ds.labels[idx] == pr.labels[i];
                }
            }
            if (L->cur) {
                L->cur->done_requests++;
                L->cur->done_images += pr.n;
            }
            if (w) {
                fmb_acc_t *a = &w->acc;
                uint64_t service = us_of(now - r->sent_ns);
                uint64_t lat = us_of(now - r->due_ns);
                a->ok++;
                a->images_ok += pr.n;
                a->labelled += labelled;
                a->correct += correct;
                a->changed += changed;
                fm_hdr_record(a->lat, lat);
                fm_hdr_record(a->service, service);
                fm_hdr_record(a->queue, pr.queue_us);
                fm_hdr_record(a->compute, pr.compute_us);
                fm_hdr_record(a->overhead, service > pr.compute_us ? service - pr.compute_us : 0);
                fmb_vacc_t *v = fmb_acc_version(a, pr.model_version, pr.model);
                if (v) {
                    v->requests++;
                    v->images += pr.n;
                    v->labelled += labelled;
                    v->correct += correct;
                    fm_hdr_record(v->lat, lat);
                }
            }
        }
    }
    if (r->win && !r->win->discarded) {
        r->win->outstanding--;
        window_settle(L, r->win);
    }
    req_free(L, r);
    if (L->shutting_down)
        return;
    /* Keep the load going: the closed loop refills its slot on the same
     * connection; the open loop sends what waits in the backlog. */
    if (L->loading) {
        if (L->step->mode == FMB_CLOSED) {
            send_next(L, cn, 0);
        } else if (L->backlog_head && (o->depth == 0 || cn->inflight < (size_t)o->depth)) {
            req_t *b = L->backlog_head;
            L->backlog_head = b->next;
            if (!L->backlog_head)
                L->backlog_tail = NULL;
            L->backlog--;
            send_req(L, cn, b);
        }
    }
    maybe_finish(L);
}

/* ---- Sending ----------------------------------------------------------------- */

static const uint8_t *pick_images(load_t *L, size_t *first) {
    const fm_dataset_t *ds = &L->run->ds;
    size_t b = (size_t)L->o->batch;
    *first = L->cursor;
    L->cursor = (L->cursor + b) % ds->n;
    if (*first + b <= ds->n)
        return ds->images + *first * FM_IMAGE_PIXELS;
    /* The request wraps around the end of the set: assemble it. */
    for (size_t i = 0; i < b; i++)
        memcpy(L->scratch + i * FM_IMAGE_PIXELS, ds->images + ((*first + i) % ds->n) * FM_IMAGE_PIXELS,
               FM_IMAGE_PIXELS);
    return L->scratch;
}

static void send_req(load_t *L, conn_t *cn, req_t *r) {
    const fmb_options_t *o = L->o;
    const uint8_t *pixels = pick_images(L, &r->first);
    fm_predict_opts_t po = {.version = o->version, .key = o->key, .deadline_ms = o->deadline_ms};
    if (o->keys > 0) {
        snprintf(L->key, sizeof L->key, "user-%" PRIu64, L->key_counter++ % (uint64_t)o->keys);
        po.key = L->key;
    }
    r->conn = cn;
    r->sent_ns = fm_now_ns();
    if (L->cur)
        L->cur->sends++;
    if (L->step->mode == FMB_OPEN && r->win && !r->win->discarded) {
        /* How far behind its schedule this request left. */
        uint64_t lag = us_of(r->sent_ns - r->due_ns);
        fm_hdr_record(r->win->acc.lag, lag);
        r->win->acc.late += lag > FMB_LATE_US;
    }
    if (fm_aclient_predict(cn->c, pixels, (size_t)o->batch, &po, on_reply, r) != 0) {
        if (r->win && !r->win->discarded) {
            fmb_errs_add(&r->win->acc.errs, "CONNECTION_LOST", 1);
            r->win->outstanding--;
        }
        req_free(L, r);
        fatal(L, "connection %d to %s: %s", cn->index, o->server, fm_last_error());
        return;
    }
    cn->inflight++;
    inflight_link(L, r);
}

/* Closed loop: one new request on `cn`, sent now. */
static void send_next(load_t *L, conn_t *cn, uint64_t due_ns) {
    req_t *r = req_new(L);
    if (!r) {
        fatal(L, "out of memory for a request");
        return;
    }
    r->due_ns = due_ns ? due_ns : fm_now_ns();
    attribute(L, r);
    send_req(L, cn, r);
}

/* ---- Open loop: the pacer --------------------------------------------------------- */

static void pacer_arm(load_t *L, uint64_t abs_ns) {
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    if (abs_ns == 0)
        abs_ns = 1; /* an all-zero value would disarm */
    its.it_value.tv_sec = (time_t)(abs_ns / 1000000000u);
    its.it_value.tv_nsec = (long)(abs_ns % 1000000000u);
    timerfd_settime(L->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void pacer_disarm(load_t *L) {
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    if (L->tfd >= 0)
        timerfd_settime(L->tfd, 0, &its, NULL);
}

static conn_t *pick_conn(load_t *L) {
    for (int k = 0; k < L->nconns; k++) {
        conn_t *cn = &L->conns[(L->rr + k) % L->nconns];
        if (cn->c && (L->o->depth == 0 || cn->inflight < (size_t)L->o->depth)) {
            L->rr = (L->rr + k + 1) % L->nconns;
            return cn;
        }
    }
    return NULL;
}

static void saturate(load_t *L);

static void on_pacer(uv_poll_t *h, int status, int events) {
    load_t *L = h->data;
    (void)status;
    (void)events;
    uint64_t expirations;
    if (read(L->tfd, &expirations, sizeof expirations) < 0 && errno != EAGAIN)
        return;
    if (!L->loading || L->step->mode != FMB_OPEN)
        return;
    uint64_t now = fm_now_ns();
    while (L->loading && L->origin_ns + (uint64_t)L->next_rel_ns <= now) {
        req_t *r = req_new(L);
        if (!r) {
            fatal(L, "out of memory for a request");
            return;
        }
        r->due_ns = L->origin_ns + (uint64_t)L->next_rel_ns;
        L->next_rel_ns = fm_arrivals_next(&L->arr);
        attribute(L, r);
        conn_t *cn = pick_conn(L);
        if (cn) {
            send_req(L, cn, r);
        } else {
            r->next = NULL;
            if (L->backlog_tail)
                L->backlog_tail->next = r;
            else
                L->backlog_head = r;
            L->backlog_tail = r;
            L->backlog++;
        }
        if (L->inflight + L->backlog > L->o->max_outstanding) {
            saturate(L);
            return;
        }
    }
    if (L->loading)
        pacer_arm(L, L->origin_ns + (uint64_t)L->next_rel_ns);
}

/* ---- Server counters ----------------------------------------------------------- */

static void on_stats(fm_aclient_t *c, int status, const fm_mp_obj_t *error, const fm_mp_obj_t *result,
                     uint64_t latency_us, void *user) {
    fmb_snap_t *snap = user;
    (void)c;
    (void)latency_us;
    if (status == 0 && !error) {
        const fm_mp_obj_t *models = fm_mp_map_get(result, "models");
        fmb_snap_t s;
        memset(&s, 0, sizeof s);
        for (uint32_t i = 0; i < fm_mp_len(models); i++) {
            const fm_mp_obj_t *m = fm_mp_at(models, i);
            uint64_t v;
            if (!fm_mp_get_u64(fm_mp_map_get(m, "images"), &v))
                s.images += v;
            if (!fm_mp_get_u64(fm_mp_map_get(m, "batches"), &v))
                s.batches += v;
            if (!fm_mp_get_u64(fm_mp_map_get(m, "success"), &v))
                s.success += v;
            if (!fm_mp_get_u64(fm_mp_map_get(m, "queue_us"), &v))
                s.queue_us += v;
            if (!fm_mp_get_u64(fm_mp_map_get(m, "compute_us"), &v))
                s.compute_us += v;
        }
        s.valid = 1;
        *snap = s;
    }
}

/* The control connection's replies carry the load as their user pointer
 * through this small wrapper, so the count of calls in flight stays right. */
typedef struct ctl_call {
    load_t *L;
    fmb_snap_t *snap;
} ctl_call_t;

static void on_ctl_reply(fm_aclient_t *c, int status, const fm_mp_obj_t *error, const fm_mp_obj_t *result,
                         uint64_t latency_us, void *user) {
    ctl_call_t *cc = user;
    load_t *L = cc->L;
    on_stats(c, status, error, result, latency_us, cc->snap);
    free(cc);
    L->ctl_inflight--;
    if (!L->shutting_down)
        maybe_finish(L);
}

static void snapshot(load_t *L, fmb_snap_t *dst) {
    if (!L->ctl)
        return;
    ctl_call_t *cc = malloc(sizeof *cc);
    if (!cc)
        return;
    cc->L = L;
    cc->snap = dst;
    if (fm_aclient_call(L->ctl, "stats", NULL, on_ctl_reply, cc) != 0) {
        free(cc);
        return;
    }
    L->ctl_inflight++;
}

/* ---- Windows ------------------------------------------------------------------- */

static int window_begin(load_t *L, int warmup) {
    window_t *w = &L->win[L->nwin];
    memset(w, 0, sizeof *w);
    if (fmb_acc_init(&w->acc) != 0) {
        fatal(L, "out of memory for a measurement window");
        return -1;
    }
    w->index = L->nwin++;
    w->warmup = warmup;
    w->number = warmup ? 0 : ++L->nmeasured;
    w->t0 = fm_now_ns();
    L->cur = w;
    snapshot(L, &w->snap0);
    return 0;
}

static void progress_line(load_t *L, int final_line);

static void window_close(load_t *L) {
    window_t *w = L->cur;
    if (!w)
        return;
    w->t1 = fm_now_ns();
    w->closed = 1;
    L->cur = NULL;
    snapshot(L, &w->snap1);
    window_settle(L, w);
}

static double window_rps(const window_t *w) {
    double s = (double)(w->t1 - w->t0) / 1e9;
    return s > 0 ? (double)w->done_requests / s : 0;
}

static void window_settle(load_t *L, window_t *w) {
    if (!w->closed || w->final || w->outstanding > 0)
        return;
    w->final = 1;
    if (w->warmup)
        return;
    L->last_final = w;
    if (L->o->progress == 1 || (L->o->progress == -1 && !L->tty))
        progress_line(L, 1);
    if (L->phase != P_MEASURE && L->phase != P_TAIL)
        return;
    /* The rule looks at the real windows that are final, in order, up to
     * the first one still waiting for replies. */
    double rps[FMB_MAX_WINDOWS], p99[FMB_MAX_WINDOWS];
    int m = 0;
    for (int i = 0; i < L->nwin && m < FMB_MAX_WINDOWS; i++) {
        const window_t *x = &L->win[i];
        if (x->warmup || x->discarded)
            continue;
        if (!x->final)
            break;
        rps[m] = window_rps(x);
        p99[m] = (double)fm_hdr_percentile(x->acc.lat, 99);
        m++;
    }
    if (fmb_stable(rps, p99, m, L->o->stable_windows, L->o->stability_pct)) {
        L->step->stable = 1;
        end_measuring(L);
    } else if (m >= L->o->max_windows) {
        end_measuring(L);
    }
}

static void on_window_timer(uv_timer_t *t) {
    load_t *L = t->data;
    if (L->phase == P_WARMUP) {
        /* The warm-up's requests are not measured: forget them. */
        if (L->cur && L->cur->warmup) {
            L->cur->discarded = 1;
            L->cur->closed = 1;
            L->cur = NULL;
        }
        L->phase = P_MEASURE;
        window_begin(L, 0);
        return;
    }
    if (L->phase != P_MEASURE)
        return;
    window_close(L);
    if (L->phase != P_MEASURE) /* the close made the step stable */
        return;
    if (L->nmeasured < L->o->max_windows) {
        window_begin(L, 0);
    } else {
        /* Every window has run: keep the load on until the last ones are
         * answered (the drain timer bounds the wait). */
        uv_timer_stop(&L->phase_timer);
        L->phase = P_TAIL;
        arm_drain(L);
    }
}

static void give_up_one(req_t *r, uint64_t now, int never_sent) {
    window_t *w = r->win;
    if (!w || w->discarded)
        return;
    fmb_errs_add(&w->acc.errs, "INCOMPLETE", 1);
    w->acc.incomplete++;
    fm_hdr_record(w->acc.lat, us_of(now - r->due_ns));
    if (never_sent) {
        /* Its send lag is at least the time it has waited. */
        fm_hdr_record(w->acc.lag, us_of(now - r->due_ns));
        w->acc.late += us_of(now - r->due_ns) > FMB_LATE_US;
    }
    r->win = NULL;
    w->outstanding--;
}

/* Requests of measured windows still unanswered are given up: each counts
 * as INCOMPLETE, with the time it has waited so far as its latency (a lower
 * bound, so a stall still shows in the percentiles). The backlog (due, never
 * sent) is dropped; requests in flight are left to a connection reset. */
static void give_up(load_t *L, int inflight_too) {
    uint64_t now = fm_now_ns();
    req_t *b = L->backlog_head;
    L->backlog_head = L->backlog_tail = NULL;
    L->backlog = 0;
    while (b) {
        req_t *next = b->next;
        give_up_one(b, now, 1);
        req_free(L, b);
        b = next;
    }
    if (inflight_too)
        for (req_t *r = L->inflight_head.next; r != &L->inflight_head; r = r->next)
            give_up_one(r, now, 0);
    for (int i = 0; i < L->nwin; i++)
        window_settle(L, &L->win[i]);
}

static void reset_conns(load_t *L) {
    L->resetting = 1;
    close_conns(L);
}

static void on_drain_timeout(uv_timer_t *t) {
    load_t *L = t->data;
    if (L->phase != P_TAIL && L->phase != P_STOP)
        return;
    L->step->timed_out = 1;
    give_up(L, 1);
    if (L->phase != P_STOP)
        end_measuring(L);
    if (L->inflight > 0)
        reset_conns(L); /* cancels what is left; the step ends when they are open again */
    maybe_finish(L);
}

static void arm_drain(load_t *L) {
    uv_timer_start(&L->drain_timer, on_drain_timeout, (uint64_t)(L->o->drain_timeout_s * 1000 + 0.5), 0);
}

static void saturate(load_t *L) {
    L->step->saturated = 1;
    snprintf(L->step->note, sizeof L->step->note,
             "saturated: more than %" PRIu64 " requests outstanding (the server cannot keep up with %.0f/s)",
             L->o->max_outstanding, L->step->target_rps);
    if (L->phase == P_WARMUP && L->cur) {
        /* Saturated before the first window: the warm-up is all there is to
         * report, so it is kept (its unanswered requests as lower bounds). */
        size_t n = strlen(L->step->note);
        snprintf(L->step->note + n, sizeof L->step->note - n, "; during the warm-up, whose figures are shown");
    }
    if (L->phase == P_MEASURE || L->phase == P_WARMUP)
        window_close(L);
    L->loading = 0;
    give_up(L, 1);
    if (L->phase != P_STOP)
        end_measuring(L);
    if (L->inflight > 0)
        reset_conns(L);
    maybe_finish(L);
}

/* Stops measuring: the open window (if any) is discarded, no new requests
 * are sent, and the step ends once every request in flight is answered. */
static void end_measuring(load_t *L) {
    if (L->phase == P_STOP || L->phase == P_DONE)
        return;
    uv_timer_stop(&L->phase_timer);
    if (L->cur) {
        L->cur->discarded = 1;
        L->cur = NULL;
    }
    L->loading = 0;
    pacer_disarm(L);
    uv_poll_stop(&L->pacer);
    L->phase = P_STOP;
    give_up(L, 0);
    if (!uv_is_active((uv_handle_t *)&L->drain_timer))
        arm_drain(L);
}

/* ---- Steps ------------------------------------------------------------------------ */

static void step_summarize(load_t *L) {
    fmb_step_t *s = L->step;
    s->windows_run = L->nmeasured;
    for (int i = 0, k = 0; i < L->nwin && k < FMB_MAX_WINDOWS; i++) {
        if (L->win[i].warmup)
            continue;
        s->win_rps[k] = window_rps(&L->win[i]);
        s->win_p99_us[k] = (double)fm_hdr_percentile(L->win[i].acc.lat, 99);
        k++;
    }
    int nfinal = 0;
    for (int i = 0; i < L->nwin; i++)
        nfinal += L->win[i].final && !L->win[i].discarded;
    /* A stable or finished step reports its last N windows. A saturated one
     * reports every window it measured: the overload builds up over them,
     * and the last, cut short, would show only its end. */
    int used = nfinal < L->o->stable_windows || s->saturated ? nfinal : L->o->stable_windows;
    s->windows_used = used;
    if (s->saturated)
        s->stable = 0;
    if (fmb_acc_init(&s->acc) != 0) {
        fatal(L, "out of memory for step results");
        return;
    }
    /* The last `used` final windows (they are the last ones closed). */
    int taken = 0;
    window_t *first = NULL, *last = NULL;
    for (int i = L->nwin - 1; i >= 0 && taken < used; i--) {
        window_t *w = &L->win[i];
        if (!w->final || w->discarded)
            continue;
        fmb_acc_add(&s->acc, &w->acc);
        s->seconds += (double)(w->t1 - w->t0) / 1e9;
        s->done_requests += w->done_requests;
        s->done_images += w->done_images;
        s->sends += w->sends;
        if (!last)
            last = w;
        first = w;
        taken++;
    }
    if (s->seconds > 0) {
        s->rps = (double)s->done_requests / s->seconds;
        s->ips = (double)s->done_images / s->seconds;
        s->sent_rps = (double)s->sends / s->seconds;
    }
    if (first && last) {
        s->snap0 = first->snap0;
        s->snap1 = last->snap1;
        if (s->snap0.valid && s->snap1.valid && s->snap1.batches > s->snap0.batches)
            s->avg_batch = (double)(s->snap1.images - s->snap0.images) /
                           (double)(s->snap1.batches - s->snap0.batches);
    }
    for (int i = 0; i < L->nwin; i++)
        fmb_acc_free(&L->win[i].acc);
    L->nwin = L->nmeasured = 0;
    L->last_final = NULL;
}

/* Skips the rest of a sweep after a step that saturated or passed the
 * latency limit: steps of the same mode (and arrivals) with more load. */
static void skip_heavier(load_t *L, const char *why) {
    fmb_run_t *run = L->run;
    const fmb_step_t *s = L->step;
    for (int j = L->si + 1; j < run->nsteps; j++) {
        fmb_step_t *t = &run->steps[j];
        if (t->mode != s->mode || t->aborted)
            continue;
        if (s->mode == FMB_CLOSED ? t->concurrency >= s->concurrency
                                  : t->arrivals == s->arrivals && t->target_rps >= s->target_rps &&
                                        (t->rate_fraction > 0) == (s->rate_fraction > 0)) {
            t->aborted = 1;
            snprintf(t->note, sizeof t->note, "skipped: %s", why);
        }
    }
}

static void check_step(load_t *L) {
    fmb_run_t *run = L->run;
    const fmb_options_t *o = L->o;
    fmb_step_t *s = L->step;
    char label[64];
    fmb_step_label(s, label, sizeof label);
    if (run->labelled && s->acc.labelled > 0) {
        double acc = (double)s->acc.correct / (double)s->acc.labelled;
        if (acc < o->min_accuracy && run->nfailures < 8) {
            snprintf(run->failures[run->nfailures++], sizeof run->failures[0],
                     "step %s: accuracy %.4f on %" PRIu64 " labelled images is below --min-accuracy %.4f: the "
                     "server's answers do not match the labels (wrong model, broken server, or wrong label file)",
                     label, acc, s->acc.labelled, o->min_accuracy);
            run->wrong = 1;
        }
    }
    uint64_t answers = s->acc.images_ok;
    if (answers > 0 && (double)s->acc.changed / (double)answers > o->max_changed && run->nfailures < 8) {
        snprintf(run->failures[run->nfailures++], sizeof run->failures[0],
                 "step %s: %" PRIu64 " of %" PRIu64 " answers differ from the answer the same version gave earlier "
                 "for the same image (more than --max-changed %.4g): results are mixed up under load",
                 label, s->acc.changed, answers, o->max_changed);
        run->wrong = 1;
    }
    if (s->saturated && !o->keep_going)
        skip_heavier(L, "an earlier step with less load saturated the server");
    else if (o->latency_limit_ms > 0 && (double)fm_hdr_percentile(s->acc.lat, 99) > o->latency_limit_ms * 1000)
        skip_heavier(L, "an earlier step with less load passed --latency-limit");
}

static void step_finish(load_t *L) {
    uv_timer_stop(&L->drain_timer);
    step_summarize(L);
    if (L->shutting_down)
        return;
    L->step->ran = 1;
    fmb_run_t *run = L->run;
    run->ndone = L->si + 1;
    if (L->o->progress != 0 && L->tty && !L->o->quiet)
        fprintf(stderr, "\r\033[K");
    if (!L->o->quiet)
        fmb_print_step(run, L->step);
    check_step(L);
    if (run->wrong || run->interrupted) {
        shutdown_all(L);
        return;
    }
    do
        L->si++;
    while (L->si < run->nsteps && run->steps[L->si].aborted);
    if (L->si >= run->nsteps) {
        shutdown_all(L);
        return;
    }
    step_start(L);
}

static void maybe_finish(load_t *L) {
    if (L->phase != P_STOP || L->shutting_down || L->resetting || L->closing_conns)
        return;
    if (L->inflight > 0 || L->ctl_inflight > 0)
        return;
    L->phase = P_DONE;
    step_finish(L);
}

/* Open-loop steps given as shares of the peak get their rates from the
 * highest closed-loop throughput measured so far. */
static int resolve_fractions(load_t *L) {
    fmb_run_t *run = L->run;
    int best = -1;
    for (int i = 0; i < run->nsteps; i++)
        if (run->steps[i].ran && run->steps[i].mode == FMB_CLOSED && run->steps[i].rps > 0 &&
            (best < 0 || run->steps[i].rps > run->steps[best].rps))
            best = i;
    if (best < 0) {
        fatal(L, "--rate-of-peak: no closed-loop step measured a throughput to take shares of");
        return -1;
    }
    run->peak_rps = run->steps[best].rps;
    fmb_step_label(&run->steps[best], run->peak_label, sizeof run->peak_label);
    for (int i = 0; i < run->nsteps; i++)
        if (run->steps[i].rate_fraction > 0 && run->steps[i].target_rps == 0)
            run->steps[i].target_rps = run->steps[i].rate_fraction * run->peak_rps;
    if (!L->o->quiet)
        printf("open-loop rates: shares of the closed-loop peak, %.0f req/s at %s\n", run->peak_rps,
               run->peak_label);
    return 0;
}

static void step_start(load_t *L) {
    const fmb_options_t *o = L->o;
    L->step = &L->run->steps[L->si];
    fmb_step_t *s = L->step;
    if (s->mode == FMB_OPEN && s->target_rps == 0 && resolve_fractions(L) != 0)
        return;
    s->stable = s->saturated = s->timed_out = 0;
    L->nwin = L->nmeasured = 0;
    L->cur = L->last_final = NULL;
    L->phase = P_WARMUP;
    L->loading = 1;
    uint64_t warm_ms = (uint64_t)(o->warmup_s * 1000 + 0.5), win_ms = (uint64_t)(o->window_s * 1000 + 0.5);
    if (warm_ms == 0)
        L->phase = P_MEASURE;
    if (window_begin(L, warm_ms > 0) != 0)
        return;
    uv_timer_start(&L->phase_timer, on_window_timer, warm_ms ? warm_ms : win_ms, win_ms);
    if (s->mode == FMB_CLOSED) {
        s->connections_used = s->concurrency < L->nconns ? s->concurrency : L->nconns;
        for (int i = 0; i < s->concurrency && L->loading; i++)
            send_next(L, &L->conns[i % L->nconns], 0);
    } else {
        s->connections_used = L->nconns;
        if (fm_arrivals_init(&L->arr, s->arrivals, s->target_rps, o->seed + (uint64_t)L->si) != 0) {
            fatal(L, "%s", fm_last_error());
            return;
        }
        L->origin_ns = fm_now_ns();
        L->next_rel_ns = fm_arrivals_next(&L->arr);
        pacer_arm(L, L->origin_ns + (uint64_t)L->next_rel_ns);
        uv_poll_start(&L->pacer, UV_READABLE, on_pacer);
    }
}

/* ---- Progress --------------------------------------------------------------------- */

static void progress_line(load_t *L, int final_line) {
    if (L->o->quiet || !L->step)
        return;
    char label[64];
    fmb_step_label(L->step, label, sizeof label);
    const window_t *w = final_line ? NULL : L->cur;
    double rps = 0, p99 = 0;
    if (final_line) {
        if (L->last_final) {
            w = L->last_final;
            rps = window_rps(w);
            p99 = (double)fm_hdr_percentile(w->acc.lat, 99) / 1000.0;
        }
    } else if (w) {
        double s = (double)(fm_now_ns() - w->t0) / 1e9;
        rps = s > 0 ? (double)w->done_requests / s : 0;
        p99 = (double)fm_hdr_percentile(w->acc.lat, 99) / 1000.0;
    }
    const char *phase = L->phase == P_WARMUP ? "warm-up" : L->phase == P_TAIL ? "finishing" : "window";
    if (final_line)
        fprintf(stderr, "  [%d/%d] %-16s window %d/%d final: %.0f req/s, p99 %.3f ms, in flight %" PRIu64 "\n",
                L->si + 1, L->run->nsteps, label, w ? w->number : 0, L->o->max_windows, rps, p99,
                L->inflight + L->backlog);
    else
        fprintf(stderr, "\r\033[K[%d/%d] %-16s %s %d/%d: %.0f req/s, p99 %.3f ms, in flight %" PRIu64, L->si + 1,
                L->run->nsteps, label, phase, L->nmeasured, L->o->max_windows, rps, p99, L->inflight + L->backlog);
}

static void on_progress(uv_timer_t *t) {
    load_t *L = t->data;
    if (L->tty && L->o->progress != 0 && !L->shutting_down)
        progress_line(L, 0);
}

static void on_sigint(uv_signal_t *h, int sig) {
    load_t *L = h->data;
    (void)sig;
    if (L->run->interrupted) {
        fprintf(stderr, "\nfmbench: interrupted twice; exiting now\n");
        _exit(FMB_EXIT_INTERRUPTED);
    }
    L->run->interrupted = 1;
    fprintf(stderr, "\nfmbench: interrupted; finishing the current step (Ctrl-C again to quit at once)\n");
    if (L->phase == P_WARMUP || L->phase == P_CONNECT)
        fatal(L, "interrupted");
    else if (L->phase == P_MEASURE) {
        window_close(L);
        end_measuring(L);
        maybe_finish(L);
    }
}

/* ---- Connections -------------------------------------------------------------------- */

static void on_auth(fm_aclient_t *c, int status, const fm_mp_obj_t *error, const fm_mp_obj_t *result,
                    uint64_t latency_us, void *user) {
    load_t *L = user;
    (void)c;
    (void)result;
    (void)latency_us;
    if (status == 0 && error) {
        fm_proto_error_t e;
        fm_proto_read_error(error, &e);
        fatal(L, "auth refused: %s: %s", e.code, e.message);
    }
}

static void send_auth(load_t *L, fm_aclient_t *c) {
    if (!L->o->token)
        return;
    fm_mp_buf_t p;
    fm_mp_buf_init(&p);
    fm_mp_pack_array(&p, 1);
    fm_mp_pack_cstr(&p, L->o->token);
    /* A connection's frames are handled in order: what follows auth is
     * already authenticated. */
    fm_aclient_call(c, "auth", &p, on_auth, L);
    fm_mp_buf_free(&p);
}

static void on_connect(fm_aclient_t *c, int status, void *user) {
    conn_t *cn = user;
    load_t *L = cn->L;
    if (status != 0) {
        fatal(L, "cannot connect to %s: %s", L->o->server, fm_last_error());
        return;
    }
    if (L->shutting_down) {
        fm_aclient_close(c, NULL, NULL);
        return;
    }
    cn->c = c;
    cn->inflight = 0;
    send_auth(L, c);
    if (++L->connected == L->nconns) {
        if (L->phase == P_CONNECT && L->step == NULL)
            step_start(L); /* the first step */
        else {
            L->phase = P_STOP; /* a reset finished: end the step that caused it */
            maybe_finish(L);
        }
    }
}

static void on_ctl_connect(fm_aclient_t *c, int status, void *user) {
    load_t *L = user;
    if (status != 0) {
        fatal(L, "cannot connect to %s: %s", L->o->server, fm_last_error());
        return;
    }
    if (L->shutting_down) {
        fm_aclient_close(c, NULL, NULL);
        return;
    }
    L->ctl = c;
    send_auth(L, c);
}

static void connect_all(load_t *L) {
    for (int i = 0; i < L->nconns; i++) {
        fm_aclient_t *c;
        L->conns[i].L = L;
        L->conns[i].index = i;
        L->conns[i].c = NULL;
        if (fm_aclient_connect(&L->loop, L->o->host, L->o->port, on_connect, &L->conns[i], &c) != 0) {
            fatal(L, "cannot connect to %s: %s", L->o->server, fm_last_error());
            return;
        }
    }
}

int fmb_load_run(fmb_run_t *run) {
    const fmb_options_t *o = run->o;
    load_t *L = calloc(1, sizeof *L);
    if (!L)
        return fm_fail(FM_ENOMEM, "load state");
    L->run = run;
    L->o = o;
    L->nconns = o->connections;
    L->tty = isatty(2);
    L->tfd = -1;
    L->inflight_head.next = L->inflight_head.prev = &L->inflight_head;
    L->conns = calloc((size_t)L->nconns, sizeof *L->conns);
    L->win = calloc((size_t)o->max_windows + 1, sizeof *L->win);
    L->scratch = malloc((size_t)o->batch * FM_IMAGE_PIXELS);
    L->labels = malloc((size_t)o->batch * sizeof *L->labels);
    L->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (!L->conns || !L->win || !L->scratch || !L->labels || L->tfd < 0) {
        if (L->tfd >= 0)
            close(L->tfd);
        free(L->conns);
        free(L->win);
        free(L->scratch);
        free(L->labels);
        free(L);
        return fm_fail(FM_ENOMEM, "load state (or timerfd: %s)", strerror(errno));
    }
    uv_loop_init(&L->loop);
    uv_timer_init(&L->loop, &L->phase_timer);
    uv_timer_init(&L->loop, &L->drain_timer);
    uv_timer_init(&L->loop, &L->progress_timer);
    uv_poll_init(&L->loop, &L->pacer, L->tfd);
    uv_signal_init(&L->loop, &L->sigint);
    L->phase_timer.data = L->drain_timer.data = L->progress_timer.data = L;
    L->pacer.data = L->sigint.data = L;
    uv_signal_start(&L->sigint, on_sigint, SIGINT);
    uv_timer_start(&L->progress_timer, on_progress, 500, 500);
    uv_unref((uv_handle_t *)&L->progress_timer);
    L->phase = P_CONNECT;
    fm_aclient_t *ctl;
    if (fm_aclient_connect(&L->loop, o->host, o->port, on_ctl_connect, L, &ctl) != 0)
        fatal(L, "cannot connect to %s: %s", o->server, fm_last_error());
    else
        connect_all(L);
    uv_run(&L->loop, UV_RUN_DEFAULT);
    if (L->tty && o->progress != 0 && !o->quiet)
        fprintf(stderr, "\r\033[K");
    /* Anything still open (a failure before shutdown) is closed here. */
    shutdown_all(L);
    uv_run(&L->loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&L->loop);
    if (rc != 0)
        fprintf(stderr, "fmbench: event loop closed with handles open: %s\n", uv_strerror(rc));
    for (int i = 0; i < L->nwin; i++)
        fmb_acc_free(&L->win[i].acc);
    while (L->free_list) {
        req_t *r = L->free_list;
        L->free_list = r->next;
        free(r);
    }
    if (L->tfd >= 0)
        close(L->tfd);
    free(L->conns);
    free(L->win);
    free(L->scratch);
    free(L->labels);
    free(L);
    return run->fatal[0] ? FM_EUNAVAILABLE : 0;
}
