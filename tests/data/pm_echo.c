/* Echo (process model): answers its input, byte for byte. */
#include "example_worker.h"

EXAMPLE_WORKER_ENTRY_POINTS

int faas_func_call(void *h, const char *in, size_t len)
{
    struct worker *w = h;
    w->append(w->ctx, in, len);
    return 0;
}
