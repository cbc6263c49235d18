/* Root (off-CPU test): calls Sleeper, then Spinner, once per request, and
 * answers "<Sleeper's answer>/<Spinner's answer>". */
#include "example_worker.h"

EXAMPLE_WORKER_ENTRY_POINTS

int faas_func_call(void *h, const char *in, size_t len)
{
    struct worker *w = h;
    const char *out;
    size_t out_len;
    if (w->invoke(w->ctx, "Sleeper", in, len, &out, &out_len) != 0)
        return -1;
    w->append(w->ctx, out, out_len);
    worker_puts(w, "/");
    if (w->invoke(w->ctx, "Spinner", in, len, &out, &out_len) != 0)
        return -1;
    w->append(w->ctx, out, out_len);
    return 0;
}
