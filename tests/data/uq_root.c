/* uq_root.c - UqRoot: calls UqCallee and returns its output. */
#include <stdlib.h>
#include "faas_worker.h"

struct worker { void *ctx; faas_invoke_fn invoke; faas_append_fn append; };

FAAS_EXPORT int faas_init(void) { return 0; }
FAAS_EXPORT int faas_create_func_worker(void *ctx, faas_invoke_fn i, faas_append_fn a, void **h)
{
    struct worker *w = malloc(sizeof *w);
    if (!w)
        return -1;
    w->ctx = ctx; w->invoke = i; w->append = a; *h = w;
    return 0;
}
FAAS_EXPORT int faas_destroy_func_worker(void *h) { free(h); return 0; }
FAAS_EXPORT int faas_func_call(void *h, const char *in, size_t len)
{
    struct worker *w = h;
    const char *out;
    size_t out_len;
    if (w->invoke(w->ctx, "UqCallee", in, len, &out, &out_len) != 0)
        return -1;
    w->append(w->ctx, out, out_len);
    return 0;
}
