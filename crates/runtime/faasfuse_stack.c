/*
 * faasfuse_stack.c - separate stacks for isolated fused callees; see
 * faasfuse_stack.h.
 *
 * The fault handler finds the stack the faulting code ran on by its stack
 * pointer: stacks are disjoint and each is used by one call at a time, so
 * no per-call bookkeeping is needed beyond the saved stack pointer the
 * switch leaves in the stack's record. It resumes the switch's recovery
 * path on the caller's stack; anything else goes to the handler that was
 * installed before (or the default action).
 */
#define _GNU_SOURCE 1

#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

#include "faasfuse_mpk.h"
#include "faasfuse_stack.h"

#define FF_ALTSTACK_SIZE ((size_t)64 << 10)
#define FF_MAX_STACKS 4096

_Static_assert(offsetof(struct ff_stack, saved_sp) == 0, "ff_stack.saved_sp");
_Static_assert(offsetof(struct ff_stack, top) == 8, "ff_stack.top");

/* Every stack ever made, for the fault handler (append-only). Extra
 * workers of re-entrant images are made on whichever thread needs one, so
 * a slot is reserved atomically and filled once its stack is ready; the
 * handler skips slots not filled yet. */
static struct ff_stack *ff_stacks[FF_MAX_STACKS];
static size_t ff_nstacks; /* slots reserved (may pass FF_MAX_STACKS) */
static struct sigaction ff_old_segv, ff_old_bus;
/* 0: not yet; 1: being installed; 2: installed; 3: failed. */
static int ff_handlers_state;

/* Where a faulted call resumes: in ff_stack_call, on the caller's stack,
 * with the callee-saved registers it pushed still there. */
extern char ff_stack_recover[] __attribute__((visibility("hidden")));

/*
 * ff_stack_call(s, fn, handle, input, len): save rbp and the callee-saved
 * registers on the caller's stack, record that stack pointer in s->saved_sp,
 * switch to s->top and call fn(handle, input, len). rbp stays the frame
 * base throughout, so the CFI (CFA = rbp + 16) holds on either stack.
 */
__asm__(".text\n"
        ".globl ff_stack_call\n"
        ".hidden ff_stack_call\n"
        ".type ff_stack_call, @function\n"
        "ff_stack_call:\n"
        "    .cfi_startproc\n"
        "    endbr64\n"
        "    pushq %rbp\n"
        "    .cfi_def_cfa_offset 16\n"
        "    .cfi_offset %rbp, -16\n"
        "    movq %rsp, %rbp\n"
        "    .cfi_def_cfa_register %rbp\n"
        "    pushq %rbx\n"
        "    .cfi_offset %rbx, -24\n"
        "    pushq %r12\n"
        "    .cfi_offset %r12, -32\n"
        "    pushq %r13\n"
        "    .cfi_offset %r13, -40\n"
        "    pushq %r14\n"
        "    .cfi_offset %r14, -48\n"
        "    pushq %r15\n"
        "    .cfi_offset %r15, -56\n"
        "    subq $8, %rsp\n"
        "    movq %rsp, 0(%rdi)\n"
        "    movq 8(%rdi), %rsp\n"
        "    movq %rsi, %rax\n"
        "    movq %rdx, %rdi\n"
        "    movq %rcx, %rsi\n"
        "    movq %r8, %rdx\n"
        "    call *%rax\n"
        "1:\n"
        "    .cfi_remember_state\n"
        "    leaq -40(%rbp), %rsp\n"
        "    popq %r15\n"
        "    popq %r14\n"
        "    popq %r13\n"
        "    popq %r12\n"
        "    popq %rbx\n"
        "    popq %rbp\n"
        "    .cfi_def_cfa %rsp, 8\n"
        "    ret\n"
        "    .cfi_restore_state\n"
        ".globl ff_stack_recover\n"
        ".hidden ff_stack_recover\n"
        "ff_stack_recover:\n"
        "    movl $-1, %eax\n"
        "    jmp 1b\n"
        "    .cfi_endproc\n"
        ".size ff_stack_call, .-ff_stack_call\n");

static void ff_chain(int sig, siginfo_t *si, void *uc)
{
    struct sigaction *old = sig == SIGSEGV ? &ff_old_segv : &ff_old_bus;
    if (old->sa_flags & SA_SIGINFO) {
        if (old->sa_sigaction) {
            old->sa_sigaction(sig, si, uc);
            return;
        }
    } else if (old->sa_handler != SIG_DFL && old->sa_handler != SIG_IGN) {
        old->sa_handler(sig);
        return;
    }
    /* The previous action was the default: restore it and return, so the
     * faulting instruction runs again and takes it. */
    sigaction(sig, old, NULL);
}

static void ff_fault(int sig, siginfo_t *si, void *ucv)
{
    ucontext_t *uc = ucv;
    /* Handlers start with only key 0 open; the stack records are the
     * runtime's (the thread's PKRU comes back from the signal frame). */
    if (ff_mpk->active)
        ff_pkru_gate_enable();
    uintptr_t sp = (uintptr_t)uc->uc_mcontext.gregs[REG_RSP];
    size_t n = __atomic_load_n(&ff_nstacks, __ATOMIC_ACQUIRE);
    if (n > FF_MAX_STACKS)
        n = FF_MAX_STACKS;
    for (size_t i = 0; i < n; i++) {
        struct ff_stack *s = __atomic_load_n(&ff_stacks[i], __ATOMIC_ACQUIRE);
        if (!s)
            continue;
        /* The guard region counts: an overflow faults with sp inside it. */
        if (sp >= (uintptr_t)s->map && sp < (uintptr_t)s->top) {
            s->faulted = 1;
            s->fault_sig = sig;
            s->fault_addr = (uintptr_t)si->si_addr;
            uintptr_t saved = (uintptr_t)s->saved_sp;
            uc->uc_mcontext.gregs[REG_RSP] = (greg_t)saved;
            uc->uc_mcontext.gregs[REG_RBP] = (greg_t)(saved + 48);
            uc->uc_mcontext.gregs[REG_RIP] =
                (greg_t)(uintptr_t)(s->resume ? s->resume : ff_stack_recover);
            return;
        }
    }
    ff_chain(sig, si, ucv);
}

/* Once per process (stacks may be made on several threads): installing
 * twice would save ff_fault as the handler to chain to. An atomic state
 * rather than pthread_once, which would raise the glibc a fused image
 * needs to 2.34. */
static int ff_install_handlers(void)
{
    int expect = 0;
    if (!__atomic_compare_exchange_n(&ff_handlers_state, &expect, 1, 0, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE)) {
        while ((expect = __atomic_load_n(&ff_handlers_state, __ATOMIC_ACQUIRE)) == 1)
            sched_yield();
        return expect == 2 ? 0 : -1;
    }
    int state = 2;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = ff_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, &ff_old_segv) != 0) {
        state = 3;
    } else if (sigaction(SIGBUS, &sa, &ff_old_bus) != 0) {
        sigaction(SIGSEGV, &ff_old_segv, NULL);
        state = 3;
    }
    __atomic_store_n(&ff_handlers_state, state, __ATOMIC_RELEASE);
    return state == 2 ? 0 : -1;
}

struct ff_stack *ff_stack_new(void)
{
    if (ff_install_handlers() != 0)
        return NULL;
    size_t n = __atomic_fetch_add(&ff_nstacks, 1, __ATOMIC_RELAXED);
    if (n >= FF_MAX_STACKS)
        return NULL;
    struct ff_stack *s = ff_state_alloc(sizeof *s);
    if (!s)
        return NULL;
    size_t len = FF_STACK_GUARD + FF_STACK_SIZE;
    char *map = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (map == MAP_FAILED) {
        ff_state_free(s);
        return NULL;
    }
    if (mprotect(map + FF_STACK_GUARD, FF_STACK_SIZE, PROT_READ | PROT_WRITE) != 0) {
        munmap(map, len);
        ff_state_free(s);
        return NULL;
    }
    s->map = map;
    s->map_len = len;
    s->top = map + len;
    __atomic_store_n(&ff_stacks[n], s, __ATOMIC_RELEASE);
    return s;
}

void ff_stack_thread_ready(void)
{
    stack_t cur;
    if (sigaltstack(NULL, &cur) == 0 && !(cur.ss_flags & SS_DISABLE))
        return; /* the thread has one (the host's or ours) */
    void *p = mmap(NULL, FF_ALTSTACK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    if (p == MAP_FAILED)
        return; /* faults still recover; only an overflow would not */
    stack_t ss = {.ss_sp = p, .ss_size = FF_ALTSTACK_SIZE, .ss_flags = 0};
    if (sigaltstack(&ss, NULL) != 0)
        munmap(p, FF_ALTSTACK_SIZE);
}
