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

/*
 * The two stack-switching calls (ff_stack_call, and ff_pkru_gate_call of
 * faasfuse_mpk.c) frame themselves alike, so that one fault handler can
 * resume either: rbp and the callee-saved registers pushed on the
 * caller's stack, with CFI (CFA = rbp + 16 on either stack), then 8 bytes
 * of padding; that stack pointer (saved_sp) lies FF_SWITCH_FRAME bytes
 * below rbp. FF_SWITCH_EPILOGUE pops them back from rbp and returns, its
 * CFI state kept for the code after it.
 */
#define FF_SWITCH_PROLOGUE                                                                      \
    "    .cfi_startproc\n"                                                                      \
    "    endbr64\n"                                                                             \
    "    pushq %rbp\n"                                                                          \
    "    .cfi_def_cfa_offset 16\n"                                                              \
    "    .cfi_offset %rbp, -16\n"                                                               \
    "    movq %rsp, %rbp\n"                                                                     \
    "    .cfi_def_cfa_register %rbp\n"                                                          \
    "    pushq %rbx\n"                                                                          \
    "    .cfi_offset %rbx, -24\n"                                                               \
    "    pushq %r12\n"                                                                          \
    "    .cfi_offset %r12, -32\n"                                                               \
    "    pushq %r13\n"                                                                          \
    "    .cfi_offset %r13, -40\n"                                                               \
    "    pushq %r14\n"                                                                          \
    "    .cfi_offset %r14, -48\n"                                                               \
    "    pushq %r15\n"                                                                          \
    "    .cfi_offset %r15, -56\n"                                                               \
    "    subq $8, %rsp\n"
#define FF_SWITCH_EPILOGUE                                                                      \
    "    .cfi_remember_state\n"                                                                 \
    "    leaq -40(%rbp), %rsp\n"                                                                \
    "    popq %r15\n"                                                                           \
    "    popq %r14\n"                                                                           \
    "    popq %r13\n"                                                                           \
    "    popq %r12\n"                                                                           \
    "    popq %rbx\n"                                                                           \
    "    popq %rbp\n"                                                                           \
    "    .cfi_def_cfa %rsp, 8\n"                                                                \
    "    ret\n"                                                                                 \
    "    .cfi_restore_state\n"
/* rbp of a switched call, above its saved_sp. */
#define FF_SWITCH_FRAME 48

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
