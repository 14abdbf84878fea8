/* fm_batcher.c: dynamic batching. One queue per model version (a slot), a
 * fixed pool of batch jobs (one per executor), batches run by our worker
 * threads (synchronous backends) or by the backend's submit (asynchronous
 * backends), and completions handed back to the loop through a mutex-guarded
 * queue plus uv_async_send, which coalesces wake-ups, so the callback drains
 * the whole queue each time. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fm_thread.h"
#include "fm_error.h"
#include "fm_log.h"
#include "fm_server_int.h"
#include "fm_time.h"

/* ---- Hand-off between threads ------------------------------------------ */

static void push_done(fm_server_t *srv, fm_job_t *job) {
    pthread_mutex_lock(&srv->done_mu);
    job->next = NULL;
    if (srv->done_tail)
        srv->done_tail->next = job;
    else
        srv->done_head = job;
    srv->done_tail = job;
    pthread_mutex_unlock(&srv->done_mu);
    uv_async_send(&srv->done_async);
}

/* Copies each image once, from the request's frame (still the socket read
 * buffer) into the batch buffer. Runs on the thread that starts the batch;
 * the loop does not free a request while a batch holds its images. */
static void gather(fm_job_t *job) {
    uint8_t *dst = (uint8_t *)job->batch.pixels;
    for (uint32_t s = 0; s < job->nsegs; s++) {
        const fm_seg_t *seg = &job->segs[s];
        const fm_req_t *r = seg->req;
        if (r->pixels) {
            memcpy(dst, r->pixels + (size_t)seg->first * 784, (size_t)seg->count * 784);
            dst += (size_t)seg->count * 784;
        } else {
            for (uint32_t i = 0; i < seg->count; i++, dst += 784)
                memcpy(dst, r->images[seg->first + i], 784);
        }
    }
}

static void *worker_main(void *arg) {
    fm_server_t *srv = arg;
    for (;;) {
        pthread_mutex_lock(&srv->work_mu);
        while (!srv->work_head && !srv->work_stop)
            pthread_cond_wait(&srv->work_cv, &srv->work_mu);
        fm_job_t *job = srv->work_head;
        if (!job) {
            pthread_mutex_unlock(&srv->work_mu);
            break;
        }
        srv->work_head = job->next;
        if (!srv->work_head)
            srv->work_tail = NULL;
        pthread_mutex_unlock(&srv->work_mu);

        gather(job);
        job->t_start = fm_now_us();
        job->status = fm_engine_infer(&srv->engine, job->slot->bm, &job->batch);
        job->t_end = fm_now_us();
        if (job->status)
            snprintf(job->detail, sizeof job->detail, "%s", fm_last_error());
        push_done(srv, job);
    }
    return NULL;
}

static void on_backend_done(fm_batch_t *batch, int status, void *user) {
    fm_job_t *job = user;
    (void)batch;
    job->t_end = fm_now_us();
    job->status = status;
    if (status)
        snprintf(job->detail, sizeof job->detail, "%s", fm_last_error());
    push_done(job->srv, job);
}

static void start_job(fm_server_t *srv, fm_job_t *job) {
    srv->jobs_inflight++;
    if (srv->async_backend) {
        gather(job);
        job->t_start = fm_now_us();
        int rc = fm_engine_submit(&srv->engine, job->slot->bm, &job->batch, on_backend_done, job);
        if (rc) {
            /* submit failed synchronously: `done` will never run. */
            job->status = rc;
            job->t_end = fm_now_us();
            snprintf(job->detail, sizeof job->detail, "%s", fm_last_error());
            push_done(srv, job);
        }
        return;
    }
    pthread_mutex_lock(&srv->work_mu);
    job->next = NULL;
    if (srv->work_tail)
        srv->work_tail->next = job;
    else
        srv->work_head = job;
    srv->work_tail = job;
    pthread_cond_signal(&srv->work_cv);
    pthread_mutex_unlock(&srv->work_mu);
}

/* ---- Completion on the loop -------------------------------------------- */

static void complete_job(fm_server_t *srv, fm_job_t *job) {
    fm_slot_t *slot = job->slot;
    uint64_t compute = job->t_end > job->t_start ? job->t_end - job->t_start : 0;
    fm_metrics_batch(slot->stats, job->batch.n, compute);
    if (job->status)
        fm_error("server", "batch of %zu images on %s %s failed: %s", job->batch.n, fm_role_name(slot->role),
                 slot->version, job->detail);
    size_t k = 0;
    for (uint32_t s = 0; s < job->nsegs; s++) {
        fm_seg_t *seg = &job->segs[s];
        fm_req_t *r = seg->req;
        if (job->status == 0) {
            memcpy(r->labels + seg->first, job->batch.labels + k, seg->count * sizeof(int32_t));
            memcpy(r->confidence + seg->first, job->batch.confidence + k, seg->count * sizeof(float));
            memcpy(r->probs + (size_t)seg->first * 10, job->batch.probs + k * 10, (size_t)seg->count * 10 * sizeof(float));
        } else if (r->status == 0) {
            r->status = job->status;
        }
        k += seg->count;
        r->compute_us += compute;
        r->done += seg->count;
        if (r->done == r->n)
            fm_req_complete(r);
    }
    job->nsegs = 0;
    job->batch.n = 0;
    job->slot = NULL;
    slot->inflight_batches--;
    fm_slot_unref(srv, slot);
    job->next = srv->free_jobs;
    srv->free_jobs = job;
    srv->jobs_inflight--;
}

static void on_done_async(uv_async_t *h) {
    fm_server_t *srv = h->data;
    pthread_mutex_lock(&srv->done_mu);
    fm_job_t *job = srv->done_head;
    srv->done_head = srv->done_tail = NULL;
    pthread_mutex_unlock(&srv->done_mu);
    while (job) {
        fm_job_t *next = job->next;
        complete_job(srv, job);
        job = next;
    }
    fm_batcher_pump(srv);
    fm_server_drain_check(srv);
}

/* ---- Queues ------------------------------------------------------------ */

void fm_batcher_unqueue(fm_server_t *srv, fm_req_t *r) {
    (void)srv;
    if (!r->queued)
        return;
    fm_slot_t *s = r->slot;
    if (r->qprev)
        r->qprev->qnext = r->qnext;
    else
        s->qhead = r->qnext;
    if (r->qnext)
        r->qnext->qprev = r->qprev;
    else
        s->qtail = r->qprev;
    r->qprev = r->qnext = NULL;
    r->queued = 0;
    s->queued_images -= r->n - r->next;
    s->queued_requests--;
}

static void on_deadline(uv_timer_t *t);

static void arm_deadline(fm_server_t *srv, uint64_t at) {
    if (srv->deadline_timer_at && srv->deadline_timer_at <= at)
        return;
    uint64_t now = fm_now_us();
    uint64_t ms = at > now ? (at - now + 999) / 1000 : 0;
    srv->deadline_timer_at = at;
    uv_timer_start(&srv->deadline_timer, on_deadline, ms, 0);
}

void fm_batcher_enqueue(fm_server_t *srv, fm_req_t *r) {
    fm_slot_t *s = r->slot;
    r->qnext = NULL;
    r->qprev = s->qtail;
    if (s->qtail)
        s->qtail->qnext = r;
    else
        s->qhead = r;
    s->qtail = r;
    r->queued = 1;
    s->queued_images += r->n;
    s->queued_requests++;
    if (r->deadline)
        arm_deadline(srv, r->deadline);
}

/* Expires queued requests whose deadline passed before any of their images
 * was dispatched, and re-arms for the next deadline. */
static void on_deadline(uv_timer_t *t) {
    fm_server_t *srv = t->data;
    srv->deadline_timer_at = 0;
    uint64_t now = fm_now_us(), next = 0;
    for (fm_slot_t *s = srv->slots; s; s = s->next) {
        fm_req_t *r = s->qhead;
        while (r) {
            fm_req_t *rn = r->qnext;
            if (r->deadline && r->next == 0) {
                if (now >= r->deadline) {
                    fm_batcher_unqueue(srv, r);
                    fm_req_fail(r, FM_PROTO_DEADLINE_EXCEEDED, "the deadline passed while the request was queued");
                } else if (!next || r->deadline < next) {
                    next = r->deadline;
                }
            }
            r = rn;
        }
    }
    if (next)
        arm_deadline(srv, next);
}

static void on_batch_timer(uv_timer_t *t) {
    fm_server_t *srv = t->data;
    srv->batch_timer_at = 0;
    fm_batcher_pump(srv);
}

/* Fills `job` from the slot's queue; a request larger than the space left
 * takes what fits and keeps its place at the head for the next batch. */
static void form(fm_server_t *srv, fm_job_t *job, fm_slot_t *s, uint64_t now) {
    size_t cap = (size_t)srv->cfg.max_batch_size, k = 0;
    job->nsegs = 0;
    while (k < cap && s->qhead) {
        fm_req_t *r = s->qhead;
        if (r->next == 0 && r->deadline && now >= r->deadline) {
            fm_batcher_unqueue(srv, r);
            fm_req_fail(r, FM_PROTO_DEADLINE_EXCEEDED, "the deadline passed while the request was queued");
            continue;
        }
        uint32_t take = r->n - r->next;
        if (take > cap - k)
            take = (uint32_t)(cap - k);
        if (r->next == 0)
            r->t_dispatch = now;
        job->segs[job->nsegs++] = (fm_seg_t){r, r->next, take};
        r->next += take;
        s->queued_images -= take;
        k += take;
        if (r->next == r->n) {
            /* Fully dispatched: leave the queue without touching the counts
             * again (fm_batcher_unqueue subtracts n - next, now zero). */
            fm_batcher_unqueue(srv, r);
        }
    }
    job->batch.n = k;
    job->t_dispatch = now;
}

void fm_batcher_pump(fm_server_t *srv) {
    if (!srv->batcher_ready)
        return;
    uint64_t now = fm_now_us();
    uint64_t wait_until = 0;
    uint64_t delay = (uint64_t)srv->max_queue_delay_us;
    size_t max_batch = (size_t)srv->cfg.max_batch_size;
    while (srv->free_jobs) {
        /* Versions take turns (round robin over those with a batch ready),
         * as TF Serving's shared scheduler does, so one version's large
         * requests cannot hold every executor while the other waits. Within
         * a version the queue is FIFO. */
        fm_slot_t *ready[8];
        int nready = 0;
        wait_until = 0;
        for (fm_slot_t *s = srv->slots; s; s = s->next) {
            if (!s->qhead)
                continue;
            if (delay == 0 || s->queued_images >= max_batch || srv->draining || now >= s->qhead->t_arrival + delay) {
                if (nready < (int)(sizeof ready / sizeof ready[0]))
                    ready[nready++] = s;
            } else {
                uint64_t t = s->qhead->t_arrival + delay;
                if (!wait_until || t < wait_until)
                    wait_until = t;
            }
        }
        if (!nready)
            break;
        fm_slot_t *best = ready[srv->rr_turn++ % (unsigned)nready];
        fm_job_t *job = srv->free_jobs;
        srv->free_jobs = job->next;
        form(srv, job, best, now);
        if (job->batch.n == 0) { /* everything it looked at had expired */
            job->next = srv->free_jobs;
            srv->free_jobs = job;
            continue;
        }
        job->slot = best;
        fm_slot_ref(best);
        best->inflight_batches++;
        start_job(srv, job);
    }
    if (wait_until && srv->free_jobs && (!srv->batch_timer_at || wait_until < srv->batch_timer_at)) {
        uint64_t ms = wait_until > now ? (wait_until - now + 999) / 1000 : 0;
        srv->batch_timer_at = wait_until;
        uv_timer_start(&srv->batch_timer, on_batch_timer, ms, 0);
    }
}

void fm_batcher_fail_queued(fm_server_t *srv, fm_proto_code_t code, const char *message) {
    for (fm_slot_t *s = srv->slots; s; s = s->next) {
        while (s->qhead) {
            fm_req_t *r = s->qhead;
            fm_batcher_unqueue(srv, r);
            if (r->next == 0) {
                fm_req_fail(r, code, message);
            } else {
                /* Part of it is computing: the rest will never run. */
                r->done += r->n - r->next;
                r->next = r->n;
                if (!r->status)
                    r->status = FM_EUNAVAILABLE;
                if (r->done == r->n)
                    fm_req_complete(r);
            }
        }
    }
}

/* ---- Setup and teardown ------------------------------------------------- */

int fm_batcher_init(fm_server_t *srv) {
    const fm_config_t *cfg = &srv->cfg;
    size_t mb = (size_t)cfg->max_batch_size;
    srv->async_backend = fm_engine_is_async(&srv->engine);
    if (srv->async_backend) {
        srv->njobs = 2 * cfg->cuda_streams;
        srv->nworkers = 0;
    } else {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        srv->nworkers = cfg->cpu_workers > 0 ? cfg->cpu_workers : (int)(cores > 0 ? cores : 1);
        srv->njobs = srv->nworkers;
    }
    srv->jobs = calloc((size_t)srv->njobs, sizeof *srv->jobs);
    if (!srv->jobs)
        return fm_fail(FM_ENOMEM, "batch jobs");
    for (int i = 0; i < srv->njobs; i++) {
        fm_job_t *j = &srv->jobs[i];
        j->srv = srv;
        j->batch.pixels = fm_engine_host_alloc(&srv->engine, mb * 784);
        j->batch.probs = fm_engine_host_alloc(&srv->engine, mb * 10 * sizeof(float));
        j->batch.labels = fm_engine_host_alloc(&srv->engine, mb * sizeof(int32_t));
        j->batch.confidence = fm_engine_host_alloc(&srv->engine, mb * sizeof(float));
        j->segs = malloc(mb * sizeof *j->segs);
        if (!j->batch.pixels || !j->batch.probs || !j->batch.labels || !j->batch.confidence || !j->segs)
            return fm_fail(FM_ENOMEM, "batch buffers for %zu images", mb);
        j->next = srv->free_jobs;
        srv->free_jobs = j;
    }
    pthread_mutex_init(&srv->work_mu, NULL);
    pthread_cond_init(&srv->work_cv, NULL);
    pthread_mutex_init(&srv->done_mu, NULL);
    uv_async_init(&srv->loop, &srv->done_async, on_done_async);
    srv->done_async.data = srv;
    uv_timer_init(&srv->loop, &srv->batch_timer);
    srv->batch_timer.data = srv;
    uv_timer_init(&srv->loop, &srv->deadline_timer);
    srv->deadline_timer.data = srv;
    if (srv->nworkers) {
        srv->workers = calloc((size_t)srv->nworkers, sizeof *srv->workers);
        if (!srv->workers)
            return fm_fail(FM_ENOMEM, "worker threads");
        for (int i = 0; i < srv->nworkers; i++)
            if (fm_thread_start(&srv->workers[i], worker_main, srv) != 0) {
                srv->nworkers = i;
                return fm_fail(FM_EINTERNAL, "cannot start worker thread %d", i);
            }
    }
    srv->batcher_ready = 1;
    fm_info("server", "batching: %d %s, max_batch_size %d, max_queue_delay_us %d, max_queue_size %d",
            srv->async_backend ? srv->njobs : srv->nworkers,
            srv->async_backend ? "batches in flight on the backend's streams" : "worker threads",
            cfg->max_batch_size, srv->max_queue_delay_us, srv->max_queue_size);
    return 0;
}

void fm_batcher_shutdown(fm_server_t *srv) {
    if (!srv->jobs)
        return;
    if (srv->batcher_ready) {
        pthread_mutex_lock(&srv->work_mu);
        srv->work_stop = 1;
        pthread_cond_broadcast(&srv->work_cv);
        pthread_mutex_unlock(&srv->work_mu);
        for (int i = 0; i < srv->nworkers; i++)
            pthread_join(srv->workers[i], NULL);
        pthread_mutex_destroy(&srv->work_mu);
        pthread_cond_destroy(&srv->work_cv);
        pthread_mutex_destroy(&srv->done_mu);
    }
    free(srv->workers);
    srv->workers = NULL;
    for (int i = 0; i < srv->njobs; i++) {
        fm_job_t *j = &srv->jobs[i];
        fm_engine_host_free(&srv->engine, (void *)j->batch.pixels);
        fm_engine_host_free(&srv->engine, j->batch.probs);
        fm_engine_host_free(&srv->engine, j->batch.labels);
        fm_engine_host_free(&srv->engine, j->batch.confidence);
        free(j->segs);
    }
    free(srv->jobs);
    srv->jobs = NULL;
    srv->batcher_ready = 0;
}
