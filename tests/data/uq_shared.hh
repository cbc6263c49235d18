// uq_shared.hh - state C++ keeps once per process: a function-local static
// of an inline function is an STB_GNU_UNIQUE definition in every object that
// uses it, and the dynamic linker binds them all to one.
#ifndef UQ_SHARED_HH
#define UQ_SHARED_HH

struct Registry {
    int hits = 0;
    static Registry &get()
    {
        static Registry r;
        return r;
    }
};

extern "C" {
/* libuqhelper.so: its own Registry::get(), and a callback it runs from a
 * destructor at process exit (as a logging library flushes its handlers). */
__attribute__((visibility("default"))) void *uq_helper_registry(void);
__attribute__((visibility("default"))) void uq_helper_at_exit(void (*fn)(void));
}

#endif
