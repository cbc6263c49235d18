/* Relay (process model): "[" Echo(in) "]", binary-safe. */
#include "example_worker.h"

EXAMPLE_WORKER_ENTRY_POINTS

int faas_func_call(void *h, const char *in, size_t len)
{
    struct worker *w = h;
    const char *out;
    size_t out_len;
    if (w->invoke(w->ctx, "Echo", in, len, &out, &out_len) != 0)
        return -1;
    worker_puts(w, "[");
    w->append(w->ctx, out, out_len);
    worker_puts(w, "]");
    return 0;
}
