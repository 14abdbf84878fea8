/* fm_cpu_pool.c: the CPU engine's helper threads. A batch is cut into chunks
 * that the calling thread and idle helpers claim one at a time; the caller
 * never waits for a helper that has not started, only for chunks a helper is
 * already running. On a shared or CPU-throttled machine (a neighbour's
 * process on the other core, a Kubernetes CPU limit) a descheduled helper
 * therefore costs nothing, where an OpenMP team would stall at every barrier
 * until the scheduler ran it.
 *
 * Plain mutex + condition variables: a job is a handful of chunks, each
 * tens of microseconds or more, so lock traffic is negligible. */
#include <omp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_thread.h"
#include "fm_cpu_impl.h"
#include "fm_error.h"

typedef struct job {
    struct job *next; /* in the pool's list of jobs open to helpers */
    fm_cpu_chunk_fn fn;
    void *arg;
    size_t nchunks;
    size_t next_chunk; /* the next unclaimed chunk */
    int lanes;         /* participants allowed, caller included */
    int next_lane;     /* lane of the next helper to join (the caller is lane 0) */
    int active;        /* helpers running a chunk of this job */
    int rc;            /* first failure */
    char detail[256];
    pthread_cond_t idle; /* signalled when `active` drops to 0 */
} job_t;

struct fm_cpu_pool {
    pthread_mutex_t lock;
    pthread_cond_t work; /* a job was posted, or the pool is stopping */
    job_t *open;         /* jobs with chunks a helper may claim */
    int stop;
    int nthreads;
    pthread_t threads[];
};

/* With the lock held: records a chunk's failure (the first one wins). */
static void job_fail(job_t *j, int rc, const char *detail) {
    if (j->rc == 0) {
        j->rc = rc;
        snprintf(j->detail, sizeof j->detail, "%s", detail);
    }
}

/* With the lock held: runs chunks of `j` on `lane` until none is left,
 * releasing the lock around each chunk. */
static void job_work(fm_cpu_pool_t *p, job_t *j, int lane) {
    while (j->next_chunk < j->nchunks && j->rc == 0) {
        size_t chunk = j->next_chunk++;
        pthread_mutex_unlock(&p->lock);
        int rc = j->fn(j->arg, chunk, lane);
        /* fm_fail details are per thread: copy before taking the lock. */
        char detail[256] = "";
        if (rc)
            snprintf(detail, sizeof detail, "%s", fm_last_error());
        pthread_mutex_lock(&p->lock);
        if (rc)
            job_fail(j, rc, detail);
    }
}

/* With the lock held: an open job a helper may join, or NULL. */
static job_t *claimable(fm_cpu_pool_t *p) {
    for (job_t *j = p->open; j; j = j->next)
        if (j->next_chunk < j->nchunks && j->next_lane < j->lanes && j->rc == 0)
            return j;
    return NULL;
}

static void *helper_main(void *arg) {
    fm_cpu_pool_t *p = arg;
    /* oneDNN (OpenMP runtime) sizes its teams from this thread's setting:
     * the primitives a helper runs were built for one thread. */
    omp_set_num_threads(1);
    pthread_mutex_lock(&p->lock);
    for (;;) {
        job_t *j;
        while (!p->stop && !(j = claimable(p)))
            pthread_cond_wait(&p->work, &p->lock);
        if (p->stop)
            break;
        int lane = j->next_lane++;
        j->active++;
        job_work(p, j, lane);
        if (--j->active == 0)
            pthread_cond_signal(&j->idle);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

int fm_cpu_pool_new(int helpers, fm_cpu_pool_t **out) {
    *out = NULL;
    if (helpers < 0)
        helpers = 0;
    fm_cpu_pool_t *p = calloc(1, sizeof *p + (size_t)helpers * sizeof(pthread_t));
    if (!p)
        return fm_fail(FM_ENOMEM, "cpu engine: out of memory for the thread pool");
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->work, NULL);
    /* Helpers never take signals (fm_thread.h). */
    int err = 0;
    for (int i = 0; i < helpers && !err; i++) {
        err = fm_thread_start(&p->threads[i], helper_main, p);
        if (!err)
            p->nthreads = i + 1;
    }
    if (err) {
        int started = p->nthreads;
        fm_cpu_pool_free(p);
        return fm_fail(FM_EBACKEND, "cpu engine: cannot start helper thread %d of %d: %s", started + 1, helpers,
                       strerror(err));
    }
    *out = p;
    return 0;
}

void fm_cpu_pool_free(fm_cpu_pool_t *p) {
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->stop = 1;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->work);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

int fm_cpu_pool_run(fm_cpu_pool_t *p, size_t nchunks, int lanes, fm_cpu_chunk_fn fn, void *arg) {
    if (nchunks == 0)
        return 0;
    /* One chunk, one lane or no helpers: no need to involve the pool. */
    if (!p || p->nthreads == 0 || lanes <= 1 || nchunks == 1) {
        for (size_t c = 0; c < nchunks; c++) {
            int rc = fn(arg, c, 0);
            if (rc)
                return rc;
        }
        return 0;
    }
    job_t j = {.fn = fn, .arg = arg, .nchunks = nchunks, .lanes = lanes, .next_lane = 1};
    pthread_cond_init(&j.idle, NULL);
    pthread_mutex_lock(&p->lock);
    j.next = p->open;
    p->open = &j;
    pthread_cond_broadcast(&p->work);
    job_work(p, &j, 0);
    /* Every chunk is claimed: close the job to helpers, then wait only for
     * the chunks helpers are still running. */
    for (job_t **pp = &p->open; *pp; pp = &(*pp)->next)
        if (*pp == &j) {
            *pp = j.next;
            break;
        }
    while (j.active > 0)
        pthread_cond_wait(&j.idle, &p->lock);
    pthread_mutex_unlock(&p->lock);
    pthread_cond_destroy(&j.idle);
    return j.rc ? fm_fail(j.rc, "%s", j.detail) : 0;
}
