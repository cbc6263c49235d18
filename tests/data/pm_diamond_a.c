/* A (process model, diamond): calls B, then C (which calls B again):
 * "A[" B(in) "|" C(in) "]". */
#include "example_worker.h"

EXAMPLE_WORKER_ENTRY_POINTS

int faas_func_call(void *h, const char *in, size_t len)
{
    struct worker *w = h;
    const char *b, *c;
    size_t b_len, c_len;
    if (w->invoke(w->ctx, "B", in, len, &b, &b_len) != 0) {
        worker_puts(w, "A: B failed");
        return -1;
    }
    if (w->invoke(w->ctx, "C", in, len, &c, &c_len) != 0) {
        worker_puts(w, "A: C failed");
        return -1;
    }
    /* B's output stays valid until this call returns. */
    worker_puts(w, "A[");
    w->append(w->ctx, b, b_len);
    worker_puts(w, "|");
    w->append(w->ctx, c, c_len);
    worker_puts(w, "]");
    return 0;
}
