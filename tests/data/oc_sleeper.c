/* Sleeper (off-CPU test): blocks in its own system call (a 200 µs sleep)
 * on every request, then answers "slept". */
#include <time.h>

#include "example_worker.h"

EXAMPLE_WORKER_ENTRY_POINTS

int faas_func_call(void *h, const char *in, size_t len)
{
    struct worker *w = h;
    struct timespec t = {0, 200 * 1000};
    (void)in;
    (void)len;
    nanosleep(&t, NULL);
    worker_puts(w, "slept");
    return 0;
}
