/*
 * dbg_root.c - the root of the debugger test: calls Callee with its input
 * and answers Callee's reply. Its own TLS block comes first in the fused
 * image's, so the callee's TLS variables sit at a non-zero offset there.
 */
#include "example_worker.h"

EXAMPLE_WORKER_ENTRY_POINTS

static __thread long root_calls[4] = {1, 2, 3, 4};

int faas_func_call(void *handle, const char *in, size_t len)
{
    struct worker *w = handle;
    const char *out;
    size_t out_len;
    /* rpc-site: callee=Callee fn=faas_func_call */
    root_calls[len % 4]++;
    int rc = w->invoke(w->ctx, "Callee", in, len, &out, &out_len);
    if (rc != 0) {
        worker_puts(w, "Callee failed");
        return -1;
    }
    w->append(w->ctx, out, out_len);
    return 0;
}
