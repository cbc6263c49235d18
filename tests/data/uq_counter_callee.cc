// uq_counter_callee.cc - Count: answers how many requests it has seen,
// kept in the inline static Tally defines too.
#include <cstdio>

#include "example_worker.h"
#include "uq_counter.hh"

extern "C" {
EXAMPLE_WORKER_ENTRY_POINTS

int faas_func_call(void *h, const char *in, size_t len)
{
    (void)in;
    (void)len;
    struct worker *w = static_cast<struct worker *>(h);
    char buf[24];
    int n = std::snprintf(buf, sizeof buf, "%d", ++requests_seen());
    w->append(w->ctx, buf, static_cast<size_t>(n));
    return 0;
}
}
