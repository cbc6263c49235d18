/* R (process model): keeps per-process state across its own nested call.
 * For n > 0 it writes "r<n>(" into a static scratch buffer, calls R with
 * n-1, then appends the scratch buffer, the nested output and ")"; for
 * n <= 0 it answers "r0()". Under nightcore every level runs in its own
 * process with its own buffer: r3(r2(r1(r0()))). In one process the
 * levels share the buffer, so R is not re-entrant. It reads its input with
 * strtol, relying on the NUL the platform puts after every input. */
#include <stdio.h>
#include <stdlib.h>
#include "example_worker.h"

static char scratch[64];

EXAMPLE_WORKER_ENTRY_POINTS

int faas_func_call(void *h, const char *in, size_t len)
{
    struct worker *w = h;
    (void)len;
    long n = strtol(in, NULL, 10);
    if (n <= 0) {
        worker_puts(w, "r0()");
        return 0;
    }
    snprintf(scratch, sizeof scratch, "r%ld(", n);
    char arg[32];
    int k = snprintf(arg, sizeof arg, "%ld", n - 1);
    const char *out;
    size_t out_len;
    if (w->invoke(w->ctx, "R", arg, (size_t)k, &out, &out_len) != 0)
        return -1;
    worker_puts(w, scratch);
    w->append(w->ctx, out, out_len);
    worker_puts(w, ")");
    return 0;
}
