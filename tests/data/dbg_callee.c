/*
 * dbg_callee.c - the callee of the debugger test: what a user inspects in
 * gdb. A static counter, a thread-local variable, a local variable and a
 * helper inlined into a function kept out of line; the marked line stops
 * inside the inlined helper with all of them set.
 */
#include <stdio.h>

#include "example_worker.h"

EXAMPLE_WORKER_ENTRY_POINTS

static int static_counter = 40;
static __thread int tls_var;
volatile int dbg_sink;

static inline __attribute__((always_inline)) int inlined_helper(int v)
{
    dbg_sink = v; /* dbg-marker: stop here */
    return v + static_counter;
}

__attribute__((noinline)) int outer_work(const char *in, size_t len)
{
    static_counter += 2;
    tls_var = 7000 + (int)len;
    int local_value = 1234 + (int)len + (in[0] == '!');
    return inlined_helper(local_value);
}

int faas_func_call(void *handle, const char *in, size_t len)
{
    struct worker *w = handle;
    char out[64];
    int r = outer_work(in, len);
    int n = snprintf(out, sizeof out, "callee:%d:%d:%d", r, static_counter, tls_var);
    w->append(w->ctx, out, (size_t)n);
    return 0;
}
