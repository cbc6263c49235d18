// throwroot.cc - a C++ root that calls Thrower inside a try block. Fused,
// the callee runs in this process, so an exception it lets escape unwinds
// through the fusion runtime and the (lowered) RPC site into this catch.
#include <stdexcept>
#include <string>

#include "leaf_service.hh"

namespace {
struct Root {
    void *ctx;
    faas_invoke_fn invoke;
    faas_append_fn append;
};
}  // namespace

extern "C" {
FAAS_EXPORT int faas_init(void) { return 0; }
FAAS_EXPORT int faas_create_func_worker(void *ctx, faas_invoke_fn invoke, faas_append_fn append,
                                        void **h)
{
    *h = new Root{ctx, invoke, append};
    return 0;
}
FAAS_EXPORT int faas_destroy_func_worker(void *h)
{
    delete static_cast<Root *>(h);
    return 0;
}
FAAS_EXPORT int faas_func_call(void *h, const char *in, size_t len)
{
    auto *r = static_cast<Root *>(h);
    std::string reply;
    try {
        const char *out;
        size_t out_len;
        /* rpc-site: callee=Thrower fn=faas_func_call */
        int rc = r->invoke(r->ctx, "Thrower", in, len, &out, &out_len);
        reply = "rc=" + std::to_string(rc) + " " + std::string(out ? out : "", out_len);
    } catch (const std::exception &e) {
        reply = std::string("caught: ") + e.what();
    }
    r->append(r->ctx, reply.data(), reply.size());
    return 0;
}
}
