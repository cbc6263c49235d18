/* C (process model, diamond): "C(" B(in) ")". */
#include "example_worker.h"

EXAMPLE_WORKER_ENTRY_POINTS

int faas_func_call(void *h, const char *in, size_t len)
{
    struct worker *w = h;
    const char *b;
    size_t b_len;
    if (w->invoke(w->ctx, "B", in, len, &b, &b_len) != 0) {
        worker_puts(w, "C: B failed");
        return -1;
    }
    worker_puts(w, "C(");
    w->append(w->ctx, b, b_len);
    worker_puts(w, ")");
    return 0;
}
