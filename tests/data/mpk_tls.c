/*
 * mpk_tls.c - a callee with thread-local storage (a per-thread call
 * counter): `merge --isolate mpk` refuses it, `stack` takes it.
 */
#include <stdio.h>

#include "example_worker.h"

EXAMPLE_WORKER_ENTRY_POINTS

static __thread unsigned calls;

int faas_func_call(void *handle, const char *in, size_t len)
{
    struct worker *w = handle;
    char out[64];
    int n = snprintf(out, sizeof out, "call %u: %.*s", ++calls, (int)len, in);
    worker_puts(w, out);
    return n > 0 ? 0 : -1;
}
