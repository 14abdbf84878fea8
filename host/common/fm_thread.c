/* fm_thread.c: see fm_thread.h. */
#include "fm_thread.h"

#include <signal.h>

int fm_thread_start(pthread_t *thread, void *(*fn)(void *), void *arg) {
    /* A new thread inherits its creator's mask: block everything around
     * the create, then restore the creator's own. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(thread, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return err;
}
