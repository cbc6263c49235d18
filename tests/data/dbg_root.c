/*
 * dbg_root.c - the root of the debugger test: calls Callee with its input
 * and answers Callee's reply.
 */
#include "example_worker.h"

EXAMPLE_WORKER_ENTRY_POINTS

int faas_func_call(void *handle, const char *in, size_t len)
{
    struct worker *w = handle;
    const char *out;
    size_t out_len;
    /* rpc-site: callee=Callee fn=faas_func_call */
    int rc = w->invoke(w->ctx, "Callee", in, len, &out, &out_len);
    if (rc != 0) {
        worker_puts(w, "Callee failed");
        return -1;
    }
    w->append(w->ctx, out, out_len);
    return 0;
}
