/* trap_ctor.c - a function library whose static constructor traps (ud2):
 * it never finishes loading. */
#include "example_worker.h"

__attribute__((constructor)) static void trap_at_load(void) { __builtin_trap(); }

EXAMPLE_WORKER_ENTRY_POINTS

int faas_func_call(void *h, const char *in, size_t len)
{
    (void)h;
    (void)in;
    (void)len;
    return 0;
}
