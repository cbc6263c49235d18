/*
 * iso_guard.c - a root that calls Crasher with its input and reports the
 * result; it keeps serving whatever Crasher does.
 */
#include <stdio.h>

#include "example_worker.h"

EXAMPLE_WORKER_ENTRY_POINTS

int faas_func_call(void *handle, const char *in, size_t len)
{
    struct worker *w = handle;
    const char *out;
    size_t out_len;
    /* rpc-site: callee=Crasher fn=faas_func_call */
    int rc = w->invoke(w->ctx, "Crasher", in, len, &out, &out_len);
    char line[32];
    snprintf(line, sizeof line, "rc=%d ", rc);
    worker_puts(w, line);
    if (rc == 0)
        w->append(w->ctx, out, out_len);
    return 0;
}
