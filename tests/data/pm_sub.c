/* Sub (process model): calls Len with the first 3 bytes of "abcdef" (a
 * substring of a larger buffer, not NUL-terminated at 3): "Sub:" Len(..). */
#include "example_worker.h"

static const char text[] = "abcdef";

EXAMPLE_WORKER_ENTRY_POINTS

int faas_func_call(void *h, const char *in, size_t len)
{
    struct worker *w = h;
    (void)in;
    (void)len;
    const char *out;
    size_t out_len;
    if (w->invoke(w->ctx, "Len", text, 3, &out, &out_len) != 0)
        return -1;
    worker_puts(w, "Sub:");
    w->append(w->ctx, out, out_len);
    return 0;
}
