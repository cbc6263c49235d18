// Callee of the lifecycle test (C++): a static constructor object, a
// thread_local counter, an exception thrown and caught inside the call.
#include <stdexcept>
#include <string>
#include <cstdlib>
#include "faas_worker.h"
#include "trace.h"

extern "C" { int g_state = 2; int helper(void) { return g_state * 10; } }

namespace {
struct Lifetime {
    Lifetime() { trace("ctor callee"); }
    ~Lifetime() { trace("dtor callee"); }
} lifetime;
thread_local int calls = 0;
struct Worker { void *ctx; faas_invoke_fn invoke; faas_append_fn append; };

int parse(const std::string &s) {
    if (s.empty() || s[0] == 'x') throw std::invalid_argument("bad input: " + s);
    return static_cast<int>(s.size());
}
}  // namespace

extern "C" {
FAAS_EXPORT int faas_init(void) { trace("init callee"); return 0; }
FAAS_EXPORT int faas_create_func_worker(void *ctx, faas_invoke_fn i, faas_append_fn a, void **h) {
    *h = new Worker{ctx, i, a};
    return 0;
}
FAAS_EXPORT int faas_destroy_func_worker(void *h) { delete static_cast<Worker *>(h); return 0; }
FAAS_EXPORT int faas_func_call(void *h, const char *in, size_t len) {
    auto *w = static_cast<Worker *>(h);
    ++calls;
    std::string out = "callee calls=" + std::to_string(calls) + " helper=" + std::to_string(helper());
    try {
        out += " len=" + std::to_string(parse(std::string(in, len)));
    } catch (const std::exception &e) {
        out += std::string(" caught=") + e.what();
    }
    w->append(w->ctx, out.data(), out.size());
    return 0;
}
}
