/*
 * iso_crasher.c - a callee that faults on request: "segv" writes through a
 * null pointer, "overflow" recurses until its stack runs out; anything else
 * answers "ok:" and the input.
 */
#include <stdint.h>
#include <string.h>

#include "example_worker.h"

EXAMPLE_WORKER_ENTRY_POINTS

static int deep(volatile char *prev, int n)
{
    volatile char frame[256];
    frame[0] = prev ? prev[0] : (char)n;
    return deep(frame, n + 1) + frame[0];
}

int faas_func_call(void *handle, const char *in, size_t len)
{
    struct worker *w = handle;
    if (has_word(in, len, "segv"))
        *(volatile int *)(uintptr_t)8 = 1;
    if (has_word(in, len, "overflow"))
        return deep(NULL, 0);
    worker_puts(w, "ok:");
    w->append(w->ctx, in, len);
    return 0;
}
