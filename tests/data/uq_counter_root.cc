// uq_counter_root.cc - Tally: counts its requests in an inline static and
// calls Count, which counts its own in the same-named inline static. Each
// function ran in its own process, so the two counts never mix.
#include <cstdio>
#include <cstring>

#include "example_worker.h"
#include "uq_counter.hh"

extern "C" {
EXAMPLE_WORKER_ENTRY_POINTS

int faas_func_call(void *h, const char *in, size_t len)
{
    struct worker *w = static_cast<struct worker *>(h);
    int mine = ++requests_seen();
    const char *out;
    size_t out_len;
    /* rpc-site: callee=Count fn=faas_func_call */
    if (w->invoke(w->ctx, "Count", in, len, &out, &out_len) != 0)
        return -1;
    char buf[48];
    int n = std::snprintf(buf, sizeof buf, "tally=%d count=", mine);
    w->append(w->ctx, buf, static_cast<size_t>(n));
    w->append(w->ctx, out, out_len);
    return 0;
}
}
