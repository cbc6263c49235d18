/*
 * iso_vault.c - a root with secrets: one in a global (writable data of its
 * library), one on its stack while it calls Spy. Each output line is Spy's
 * report of what it could see.
 */
#include <stdio.h>
#include <string.h>

#include "example_worker.h"

static char vault_global[64];

int faas_init(void)
{
    snprintf(vault_global, sizeof vault_global, "FFSECRET:%s", "global");
    return 0;
}
int faas_create_func_worker(void *ctx, faas_invoke_fn i, faas_append_fn a, void **h)
{
    return worker_create(ctx, i, a, h);
}
int faas_destroy_func_worker(void *h)
{
    free(h);
    return 0;
}

int faas_func_call(void *handle, const char *in, size_t len)
{
    struct worker *w = handle;
    volatile char secret[64];
    char tmp[64];
    snprintf(tmp, sizeof tmp, "FFSECRET:stack-%.*s", (int)(len < 16 ? len : 16), in);
    for (size_t i = 0; i < sizeof tmp; i++)
        secret[i] = tmp[i];
    memset(tmp, 0, sizeof tmp);
    const char *out;
    size_t out_len;
    /* rpc-site: callee=Spy fn=faas_func_call */
    int rc = w->invoke(w->ctx, "Spy", in, len, &out, &out_len);
    if (rc != 0)
        return -1;
    w->append(w->ctx, out, out_len);
    /* The secrets stay live across the call. */
    return secret[0] == 'F' && vault_global[0] == 'F' ? 0 : -1;
}
