/* Root of the lifecycle test: traces its constructor, destructor and
 * faas_init, calls TraceCallee, and reports per-thread call counts. */
#include <stdio.h>
#include <stdlib.h>
#include "faas_worker.h"
#include "trace.h"

struct worker { void *ctx; faas_invoke_fn invoke; faas_append_fn append; };
int g_state = 1;
static __thread int calls;
int helper(void) { return g_state; }

__attribute__((constructor)) static void ctor(void) { trace("ctor root"); }
__attribute__((destructor)) static void dtor(void) { trace("dtor root"); }

int faas_init(void) { trace("init root"); return 0; }
int faas_create_func_worker(void *ctx, faas_invoke_fn i, faas_append_fn a, void **h) {
    struct worker *w = malloc(sizeof *w);
    if (!w) return -1;
    w->ctx = ctx; w->invoke = i; w->append = a; *h = w;
    return 0;
}
int faas_destroy_func_worker(void *h) { free(h); return 0; }
int faas_func_call(void *h, const char *in, size_t len) {
    struct worker *w = h;
    const char *out; size_t out_len; char buf[64];
    calls++;
    if (w->invoke(w->ctx, "TraceCallee", in, len, &out, &out_len) != 0) return -1;
    int n = snprintf(buf, sizeof buf, "root calls=%d helper=%d ", calls, helper());
    w->append(w->ctx, buf, (size_t)n);
    w->append(w->ctx, out, out_len);
    return 0;
}
