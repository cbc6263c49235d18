/*
 * mpk_pkey.c - a callee that imports libc's pkey_set (it would reopen a
 * key): `merge --isolate mpk` refuses it, `stack` takes it.
 */
#define _GNU_SOURCE 1
#include <stdio.h>
#include <sys/mman.h>

#include "example_worker.h"

EXAMPLE_WORKER_ENTRY_POINTS

int faas_func_call(void *handle, const char *in, size_t len)
{
    struct worker *w = handle;
    char out[64];
    /* Asks for rights to a key it was never given: harmless where it runs. */
    int rc = len > 1000 ? pkey_set(15, 0) : 0;
    snprintf(out, sizeof out, "pkey %d: %.*s", rc, (int)(len < 16 ? len : 16), in);
    worker_puts(w, out);
    return 0;
}
