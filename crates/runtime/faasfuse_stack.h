/*
 * faasfuse_stack.h - separate stacks for isolated fused callees
 * (`merge --isolate stack`).
 *
 * A callee flagged FF_IMAGE_ISOLATE_STACK runs each call on a stack of its
 * worker's own, so no frame of its callers lies above its frames: scanning
 * up its stack finds nothing of theirs. The stack has a guard region below
 * it; a fault (SIGSEGV, SIGBUS) while the code runs on such a stack, a
 * guard hit included, ends that call with -1 and sets `faulted`, as a
 * crashed callee process fails its call on the platform, unless the
 * faulting instruction lies in a system library (libc, the dynamic loader,
 * libstdc++, libgcc_s), which may hold a lock the abandoned frames would
 * never release: that fault takes the action it would take without
 * faasfuse (fail closed). Unwinding crosses
 * the switch (the switch has CFI), so exceptions and debugger backtraces
 * work as on one stack.
 */
#ifndef FAASFUSE_STACK_H
#define FAASFUSE_STACK_H

#include <stddef.h>
#include <stdint.h>

#define FF_STACK_SIZE ((size_t)8 << 20) /* a thread's default stack */
#define FF_STACK_GUARD ((size_t)64 << 10)

struct ff_stack {
    void *saved_sp;  /* set by ff_stack_call: where a fault resumes (offset 0) */
    char *top;       /* highest address + 1, 16-byte aligned (offset 8) */
    char *map;       /* the mapping, guard region first */
    size_t map_len;
    volatile int faulted; /* set by the fault handler; cleared by the runtime */
    uintptr_t fault_addr;
    int fault_sig;
    /* Where a faulted call resumes; NULL: ff_stack_call's recovery path. */
    void *resume;
};

/* A new stack (guard region and handlers installed, the image pinned);
 * NULL if out of memory or out of registry slots. */
struct ff_stack *ff_stack_new(void);

/* Unmap s and give its registry slot back (its worker is destroyed; no call
 * runs on it). NULL is ignored. */
void ff_stack_free(struct ff_stack *s);

/* fn(handle, input, len) on stack s. Returns fn's result, or -1 with
 * s->faulted set when the call faulted. */
int ff_stack_call(struct ff_stack *s, int (*fn)(void *, const char *, size_t), void *handle,
                  const char *input, size_t len);

/* The stack record a gate returns through (faasfuse_stack.c). */
struct ff_stack *ff_stack_returning(uintptr_t sp);

/* Make sure the calling thread can take a fault on an exhausted stack (an
 * alternate signal stack): once per thread, cheap after that. */
void ff_stack_thread_ready(void);

#endif /* FAASFUSE_STACK_H */
