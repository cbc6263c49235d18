/* Spinner (off-CPU test): computes on the CPU only, never blocks, and
 * answers the low digit of a sum over its input. */
#include "example_worker.h"

EXAMPLE_WORKER_ENTRY_POINTS

int faas_func_call(void *h, const char *in, size_t len)
{
    struct worker *w = h;
    volatile unsigned long sum = 0;
    char digit[2] = {0, 0};
    for (unsigned long i = 0; i < 200000; i++)
        sum += (unsigned char)in[i % (len ? len : 1)] + i;
    digit[0] = (char)('0' + sum % 10);
    worker_puts(w, digit);
    return 0;
}
