/* C (process model, diamond): "C(" B(in) ")". */
#include "example_worker.h"

int faas_init(void) { return 0; }
int faas_create_func_worker(void *ctx, faas_invoke_fn i, faas_append_fn a, void **h)
{
    return worker_create(ctx, i, a, h);
}
int faas_destroy_func_worker(void *h) { free(h); return 0; }

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
