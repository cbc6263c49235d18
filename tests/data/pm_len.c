/* Len (process model): "len=<strlen(in)> nul=<in[len] == 0> n=<len>".
 * The platform hands every call a private copy of its input followed by a
 * NUL, so strlen(in) == len for text inputs. */
#include <stdio.h>
#include "example_worker.h"

EXAMPLE_WORKER_ENTRY_POINTS

int faas_func_call(void *h, const char *in, size_t len)
{
    struct worker *w = h;
    char buf[96];
    snprintf(buf, sizeof buf, "len=%zu nul=%d n=%zu", strlen(in), in[len] == 0, len);
    worker_puts(w, buf);
    return 0;
}
