/* fm_thread.h: starting background threads that never take signals.
 *
 * Every helper thread (engine pool, server workers, log writer, registry
 * follower) starts with all signals blocked, so SIGINT/SIGTERM/SIGHUP reach
 * only the thread that handles them (the event loop, or a sigwait thread)
 * and never interrupt a compute kernel or a library call on another thread. */
#ifndef FM_THREAD_H
#define FM_THREAD_H

#include <pthread.h>

/* pthread_create with every signal blocked in the new thread; the caller's
 * mask is unchanged. Returns 0 or the pthread error number. */
int fm_thread_start(pthread_t *thread, void *(*fn)(void *), void *arg);

#endif /* FM_THREAD_H */
