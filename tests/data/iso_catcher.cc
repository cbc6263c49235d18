// iso_catcher.cc - a C++ callee that throws and catches inside itself on
// every call, through a few frames.
#include <stdexcept>
#include <string>

#include "leaf_service.hh"

namespace {
[[gnu::noinline]] int Parse(const std::string &in, int depth)
{
    if (depth == 0)
        throw std::invalid_argument("bad:" + in);
    return Parse(in, depth - 1) + 1;
}

class Catcher {
  public:
    explicit Catcher(Output out) : out_(out) {}
    int Call(const std::string &in)
    {
        try {
            Parse(in, 3);
        } catch (const std::exception &e) {
            out_(std::string("caught inside: ") + e.what());
            return 0;
        }
        return -1;
    }

  private:
    Output out_;
};
}  // namespace

FAAS_LEAF_SERVICE(Catcher)
