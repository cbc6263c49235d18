/* Benchmark callee: appends one byte. */
#include <stdlib.h>
#include "faas_worker.h"

struct worker { void *ctx; faas_append_fn append; };

int faas_init(void) { return 0; }
int faas_create_func_worker(void *ctx, faas_invoke_fn i, faas_append_fn a, void **h) {
    (void)i;
    struct worker *w = malloc(sizeof *w);
    if (!w) return -1;
    w->ctx = ctx; w->append = a; *h = w;
    return 0;
}
int faas_destroy_func_worker(void *h) { free(h); return 0; }
int faas_func_call(void *h, const char *in, size_t len) {
    struct worker *w = h;
    w->append(w->ctx, len ? in : "-", 1);
    return 0;
}
