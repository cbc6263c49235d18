// uq_callee.cc - UqCallee: a C++ function with unique symbols. It reports
// whether its Registry is the one its helper library sees (one per process),
// and leaves a callback with the helper that runs at process exit: the
// platform never unloads a library, and the dynamic linker never unloads one
// whose unique definition it bound (Counter below is only defined here).
#include <cstdio>
#include <string>
#include <unistd.h>

#include "leaf_service.hh"
#include "uq_shared.hh"

struct Counter {
    static int &calls()
    {
        static int n;
        return n;
    }
};

static void said_goodbye(void)
{
    static const char msg[] = "UqCallee still mapped at exit\n";
    if (write(1, msg, sizeof msg - 1) < 0)
        _exit(3);
}

namespace {
struct UqCallee {
    Output out;
    explicit UqCallee(Output o) : out(o) { uq_helper_at_exit(said_goodbye); }
    int Call(const std::string &in)
    {
        Registry::get().hits++;
        Counter::calls()++;
        bool same = &Registry::get() == uq_helper_registry();
        out(in + ": registry " + (same ? "shared" : "split") + ", hits " +
            std::to_string(Registry::get().hits) + ", calls " + std::to_string(Counter::calls()));
        return 0;
    }
};
}  // namespace

FAAS_LEAF_SERVICE(UqCallee)
