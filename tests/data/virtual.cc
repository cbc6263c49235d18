// A C++ function with virtual calls whose arguments look like an
// invoke_fn's (six integer arguments, a pointer in rsi), next to one real
// RPC: inspect must report only the RPC.
#include <cstddef>
#include <cstring>
#include <string>

#include "faas_worker.h"

struct Sink {
    virtual ~Sink() = default;
    virtual int put(const char *name, const char *data, size_t len, const char **out,
                    size_t *out_len) = 0;
};

struct Upper : Sink {
    std::string last;
    int put(const char *name, const char *data, size_t len, const char **out,
            size_t *out_len) override
    {
        last.assign(name);
        last.append(data, len);
        *out = last.data();
        *out_len = last.size();
        return 0;
    }
};

struct Worker {
    void *ctx;
    faas_invoke_fn invoke;
    faas_append_fn append;
    Sink *sink;
};

extern "C" {
int faas_init(void) { return 0; }
int faas_create_func_worker(void *ctx, faas_invoke_fn i, faas_append_fn a, void **h)
{
    *h = new Worker{ctx, i, a, new Upper};
    return 0;
}
int faas_destroy_func_worker(void *h)
{
    auto *w = static_cast<Worker *>(h);
    delete w->sink;
    delete w;
    return 0;
}

__attribute__((noinline)) static int relay(Sink *s, const std::string &name, const char *in,
                                           size_t len, const char **out, size_t *out_len)
{
    const char *o = nullptr;
    size_t ol = 0;
    int rc = s->put(name.c_str(), in, len, &o, &ol);
    *out = o;
    *out_len = ol;
    return rc + 1;
}

int faas_func_call(void *h, const char *in, size_t len)
{
    auto *w = static_cast<Worker *>(h);
    const char *out;
    size_t out_len;
    std::string name(in, len > 3 ? 3 : len);
    if (relay(w->sink, name, in, len, &out, &out_len) != 1)
        return -1;
    w->append(w->ctx, out, out_len);
    if (w->invoke(w->ctx, "Bar", in, len, &out, &out_len) != 0)
        return -1;
    w->append(w->ctx, out, out_len);
    return 0;
}
}
