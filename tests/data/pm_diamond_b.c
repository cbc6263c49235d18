/* B (process model, diamond): keeps its caller context and callbacks in
 * globals at create time, which is legal when a process creates exactly
 * one worker. Answers "B<in>" and makes one nested call through the stored
 * invoke (to a name nobody serves, expecting -1). Reports "!created=N" if
 * its process created more than one worker. */
#include <stdio.h>
#include "example_worker.h"

static void *g_ctx;
static faas_invoke_fn g_invoke;
static faas_append_fn g_append;
static int g_created;

int faas_init(void) { return 0; }
int faas_create_func_worker(void *ctx, faas_invoke_fn i, faas_append_fn a, void **h)
{
    g_created++;
    g_ctx = ctx;
    g_invoke = i;
    g_append = a;
    *h = &g_created;
    return 0;
}
int faas_destroy_func_worker(void *h) { (void)h; return 0; }

int faas_func_call(void *h, const char *in, size_t len)
{
    (void)h;
    const char *out;
    size_t out_len;
    int rc = g_invoke(g_ctx, "Nobody", in, len, &out, &out_len);
    g_append(g_ctx, "B<", 2);
    g_append(g_ctx, in, len);
    g_append(g_ctx, rc == -1 ? ">" : ">?", rc == -1 ? 1 : 2);
    if (g_created != 1) {
        char note[32];
        int n = snprintf(note, sizeof note, "!created=%d", g_created);
        g_append(g_ctx, note, (size_t)n);
    }
    return 0;
}
