/*
 * decoy.c - a root function with one real RPC (to Bar) and one indirect
 * call that looks exactly like an RPC (six arguments, a constant name that
 * is a fused callee's, output pointers set just before) but goes to a local
 * function. faasfuse lowers both; the guard must send the decoy to its real
 * target.
 */
#include <stdio.h>
#include <string.h>

#include "example_worker.h"

typedef int (*audit_fn)(void *ctx, const char *tag, const char *in, size_t len,
                        const char **out, size_t *out_len);

static int audit_local(void *ctx, const char *tag, const char *in, size_t len,
                       const char **out, size_t *out_len)
{
    static char buf[64];
    (void)ctx;
    snprintf(buf, sizeof buf, "audit(%s,%zu)", tag, len);
    (void)in;
    *out = buf;
    *out_len = strlen(buf);
    return 7;
}

/* Read through a volatile pointer so the call stays indirect. */
static audit_fn volatile audit = audit_local;

FAAS_EXPORT int faas_init(void) { return 0; }
FAAS_EXPORT int faas_create_func_worker(void *ctx, faas_invoke_fn invoke, faas_append_fn append,
                                        void **handle)
{
    return worker_create(ctx, invoke, append, handle);
}
FAAS_EXPORT int faas_destroy_func_worker(void *handle)
{
    free(handle);
    return 0;
}
FAAS_EXPORT int faas_func_call(void *handle, const char *in, size_t len)
{
    struct worker *w = handle;
    const char *out;
    size_t out_len;
    int rc = audit(w->ctx, "Bar", in, len, &out, &out_len); /* not an RPC */
    w->append(w->ctx, out, out_len);
    char line[32];
    snprintf(line, sizeof line, " rc=%d ", rc);
    worker_puts(w, line);
    /* rpc-site: callee=Bar fn=faas_func_call */
    if (w->invoke(w->ctx, "Bar", in, len, &out, &out_len) != 0)
        return -1;
    w->append(w->ctx, out, out_len);
    return 0;
}
