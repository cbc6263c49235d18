// uq_helper.cc - a system-library stand-in (linked -z nodelete, as libstdc++
// or a logging library stays loaded): shares Registry with its users and
// calls back into one of them at exit.
#include <cstdio>

#include "uq_shared.hh"

static void (*at_exit_fn)(void);

extern "C" void *uq_helper_registry(void) { return &Registry::get(); }
extern "C" void uq_helper_at_exit(void (*fn)(void)) { at_exit_fn = fn; }

__attribute__((destructor)) static void run_at_exit(void)
{
    if (at_exit_fn)
        at_exit_fn();
}
