// thrower.cc - a C++ callee that lets an exception escape faas_func_call
// when its input contains "throw" (only meaningful once fused: across a
// process boundary nothing can catch it).
#include <stdexcept>
#include <string>

#include "leaf_service.hh"

namespace {
class Thrower {
  public:
    explicit Thrower(Output out) : out_(out) {}
    int Call(const std::string &in)
    {
        if (in.find("throw") != std::string::npos)
            throw std::runtime_error("thrown by Thrower on " + in);
        out_("fine:" + in);
        return 0;
    }

  private:
    Output out_;
};
}  // namespace

FAAS_LEAF_SERVICE(Thrower)
