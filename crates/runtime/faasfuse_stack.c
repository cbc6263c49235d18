/*
 * faasfuse_stack.c - separate stacks for isolated fused callees; see
 * faasfuse_stack.h.
 *
 * The fault handler finds the stack the faulting code ran on by its stack
 * pointer: stacks are disjoint and each is used by one call at a time, so
 * no per-call bookkeeping is needed beyond the saved stack pointer the
 * switch leaves in the stack's record. It resumes the switch's recovery
 * path on the caller's stack. Anything else keeps the action it would have
 * without faasfuse (ff_chain): a fault outside the isolated stacks, one
 * whose instruction lies in a system library, and a SIGSEGV or SIGBUS sent
 * by kill, raise or sigqueue (si_code <= 0), even while a stack is in use.
 */
#define _GNU_SOURCE 1

#include <dlfcn.h>
#include <link.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include "faasfuse_mpk.h"
#include "faasfuse_stack.h"

/* dladdr and dlopen as glibc 2.2.5 has them (in libdl there): the
 * default versions of glibc >= 2.34 would raise the glibc a fused image
 * needs. */
__asm__(".symver dladdr,dladdr@GLIBC_2.2.5");
__asm__(".symver dlopen,dlopen@GLIBC_2.2.5");

#define FF_ALTSTACK_SIZE ((size_t)64 << 10)
#define FF_MAX_STACKS 4096
#define FF_MAX_SYS_RANGES 32

_Static_assert(offsetof(struct ff_stack, saved_sp) == 0, "ff_stack.saved_sp");
_Static_assert(offsetof(struct ff_stack, top) == 8, "ff_stack.top");

/* The registry the fault handler reads. Slot i holds a record, allocated
 * the first time the slot is used and kept (so the handler never reads
 * freed memory), and a state: FF_SLOT_FREE, FF_SLOT_BUSY (being filled or
 * emptied: the handler skips it) or FF_SLOT_LIVE. A worker's destruction
 * frees its stack's mapping and its slot, which the next stack reuses. */
enum { FF_SLOT_FREE, FF_SLOT_BUSY, FF_SLOT_LIVE };
static struct ff_stack *ff_stacks[FF_MAX_STACKS];
static int ff_slot_state[FF_MAX_STACKS];
static size_t ff_nstacks; /* slots ever used: the handler looks below it */
static struct sigaction ff_old_segv, ff_old_bus;
/* 0: not yet; 1: being installed; 2: installed; 3: failed. */
static int ff_handlers_state;

/* Executable ranges of the system libraries (libc, the loader, libstdc++,
 * libgcc_s, libpthread, libdl) loaded when the handlers were installed: a
 * fault there is not recovered (the code may hold a lock). */
static struct {
    uintptr_t lo, hi;
} ff_sys[FF_MAX_SYS_RANGES];
static size_t ff_nsys;

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
        FF_SWITCH_PROLOGUE
        "    movq %rsp, 0(%rdi)\n"
        "    movq 8(%rdi), %rsp\n"
        "    movq %rsi, %rax\n"
        "    movq %rdx, %rdi\n"
        "    movq %rcx, %rsi\n"
        "    movq %r8, %rdx\n"
        "    call *%rax\n"
        "1:\n"
        FF_SWITCH_EPILOGUE
        ".globl ff_stack_recover\n"
        ".hidden ff_stack_recover\n"
        "ff_stack_recover:\n"
        "    movl $-1, %eax\n"
        "    jmp 1b\n"
        "    .cfi_endproc\n"
        ".size ff_stack_call, .-ff_stack_call\n");

/* Write a constant line to stderr: all a signal handler may print. */
static void ff_say(const char *line)
{
    ssize_t r = write(2, line, strlen(line));
    (void)r;
}

/* The default action of a fault signal: the process dies by it, as it
 * would without faasfuse (a core dump where enabled). */
static void ff_die(int sig)
{
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigaction(sig, &dfl, NULL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    raise(sig);
}

/* (sigprocmask: the calling thread's mask in glibc; pthread_sigmask would
 * need glibc 2.32.)
 *
 * What sig would have done without faasfuse's handler, which stays
 * installed: the previous handler, run as the kernel would run it (its
 * sa_mask and, unless SA_NODEFER, sig blocked; SA_RESETHAND makes the
 * default action the one to chain to from then on; SA_SIGINFO or not);
 * SIG_IGN ignores a sent signal (a real fault cannot be ignored: the
 * kernel kills the process); SIG_DFL kills the process. */
static void ff_chain(int sig, siginfo_t *si, void *ucv)
{
    ucontext_t *uc = ucv;
    struct sigaction *old = sig == SIGSEGV ? &ff_old_segv : &ff_old_bus;
    struct sigaction prev = *old;
    if (prev.sa_handler == SIG_IGN && si->si_code <= 0)
        return;
    if (prev.sa_handler == SIG_DFL || prev.sa_handler == SIG_IGN) {
        ff_die(sig);
        return;
    }
    if (prev.sa_flags & SA_RESETHAND) {
        old->sa_handler = SIG_DFL;
        old->sa_flags &= ~SA_SIGINFO;
    }
    sigset_t mask = uc->uc_sigmask, ours;
    for (int s = 1; s < NSIG; s++)
        if (sigismember(&prev.sa_mask, s) == 1)
            sigaddset(&mask, s);
    if (prev.sa_flags & SA_NODEFER)
        sigdelset(&mask, sig);
    else
        sigaddset(&mask, sig);
    sigprocmask(SIG_SETMASK, &mask, &ours);
    if (prev.sa_flags & SA_SIGINFO)
        prev.sa_sigaction(sig, si, ucv);
    else
        prev.sa_handler(sig);
    sigprocmask(SIG_SETMASK, &ours, NULL);
}

/* The live stack holding sp (its guard region included), or NULL. */
static struct ff_stack *ff_stack_at(uintptr_t sp)
{
    size_t n = __atomic_load_n(&ff_nstacks, __ATOMIC_ACQUIRE);
    for (size_t i = 0; i < n; i++) {
        if (__atomic_load_n(&ff_slot_state[i], __ATOMIC_ACQUIRE) != FF_SLOT_LIVE)
            continue;
        struct ff_stack *s = ff_stacks[i];
        if (sp >= (uintptr_t)s->map && sp < (uintptr_t)s->top)
            return s;
    }
    return NULL;
}

/* The stack record a gate returns through: the live stack whose top the
 * callee's stack pointer came back to (top - 16, as the gate left it) and
 * that is in a call. Found in the runtime's registry, never through what
 * the callee's memory says; NULL if none. */
struct ff_stack *ff_stack_returning(uintptr_t sp)
{
    struct ff_stack *s = ff_stack_at(sp);
    return s && (uintptr_t)s->top - 16 == sp && s->saved_sp ? s : NULL;
}

static int ff_in_system_code(uintptr_t pc)
{
    for (size_t i = 0; i < ff_nsys; i++)
        if (pc >= ff_sys[i].lo && pc < ff_sys[i].hi)
            return 1;
    return 0;
}

static void ff_fault(int sig, siginfo_t *si, void *ucv)
{
    ucontext_t *uc = ucv;
    /* Handlers start with only key 0 open; the stack records are the
     * runtime's (the thread's PKRU comes back from the signal frame). */
    if (ff_mpk->active)
        ff_pkru_gate_enable();
    /* si_code <= 0: sent by kill, raise, sigqueue, tgkill: not a fault. */
    struct ff_stack *s =
        si->si_code > 0 ? ff_stack_at((uintptr_t)uc->uc_mcontext.gregs[REG_RSP]) : NULL;
    if (s && ff_in_system_code((uintptr_t)uc->uc_mcontext.gregs[REG_RIP])) {
        ff_say("faasfuse: a fault inside a system library (libc, the loader, libstdc++, "
               "libgcc_s) on an isolated stack is not recovered: it may hold a lock\n");
        s = NULL;
    }
    if (!s) {
        ff_chain(sig, si, ucv);
        return;
    }
    s->faulted = 1;
    s->fault_sig = sig;
    s->fault_addr = (uintptr_t)si->si_addr;
    uintptr_t saved = (uintptr_t)s->saved_sp;
    if (s->resume) /* an mpk gate's: no longer in a call (ff_stack_returning) */
        s->saved_sp = NULL;
    uc->uc_mcontext.gregs[REG_RSP] = (greg_t)saved;
    uc->uc_mcontext.gregs[REG_RBP] = (greg_t)(saved + FF_SWITCH_FRAME);
    uc->uc_mcontext.gregs[REG_RIP] =
        (greg_t)(uintptr_t)(s->resume ? s->resume : ff_stack_recover);
}

static int ff_note_system_library(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    (void)data;
    static const char *const names[] = {"libc.so",      "ld-linux",     "libstdc++.so",
                                        "libgcc_s.so",  "libpthread.so", "libdl.so"};
    const char *base = info->dlpi_name ? strrchr(info->dlpi_name, '/') : NULL;
    base = base ? base + 1 : info->dlpi_name;
    int system = 0;
    for (size_t i = 0; base && i < sizeof names / sizeof names[0]; i++)
        system |= strncmp(base, names[i], strlen(names[i])) == 0;
    for (size_t i = 0; system && i < info->dlpi_phnum && ff_nsys < FF_MAX_SYS_RANGES; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) {
            ff_sys[ff_nsys].lo = info->dlpi_addr + ph->p_vaddr;
            ff_sys[ff_nsys].hi = info->dlpi_addr + ph->p_vaddr + ph->p_memsz;
            ff_nsys++;
        }
    }
    return 0;
}

/* Keep this image mapped for good: the handlers installed point into it,
 * and a dlclose that unmapped it would leave the next SIGSEGV or SIGBUS
 * jumping into whatever is mapped there then. */
static int ff_pin_image(void)
{
    Dl_info info;
    if (!dladdr((void *)ff_fault, &info) || !info.dli_fname)
        return -1;
    return dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE) ? 0 : -1;
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
    dl_iterate_phdr(ff_note_system_library, NULL);
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
    } else if (ff_pin_image() != 0) {
        sigaction(SIGSEGV, &ff_old_segv, NULL);
        sigaction(SIGBUS, &ff_old_bus, NULL);
        state = 3;
    }
    __atomic_store_n(&ff_handlers_state, state, __ATOMIC_RELEASE);
    return state == 2 ? 0 : -1;
}

/* A free registry slot, now FF_SLOT_BUSY, with its record; SIZE_MAX if
 * none is left. */
static size_t ff_take_slot(void)
{
    for (size_t i = 0; i < FF_MAX_STACKS; i++) {
        int expect = FF_SLOT_FREE;
        if (!__atomic_compare_exchange_n(&ff_slot_state[i], &expect, FF_SLOT_BUSY, 0,
                                         __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
            continue;
        if (!ff_stacks[i] && !(ff_stacks[i] = ff_state_alloc(sizeof(struct ff_stack)))) {
            __atomic_store_n(&ff_slot_state[i], FF_SLOT_FREE, __ATOMIC_RELEASE);
            return SIZE_MAX;
        }
        size_t n = __atomic_load_n(&ff_nstacks, __ATOMIC_RELAXED);
        while (n < i + 1 && !__atomic_compare_exchange_n(&ff_nstacks, &n, i + 1, 0,
                                                         __ATOMIC_RELEASE, __ATOMIC_RELAXED))
            ;
        return i;
    }
    return SIZE_MAX;
}

struct ff_stack *ff_stack_new(void)
{
    if (ff_install_handlers() != 0)
        return NULL;
    size_t i = ff_take_slot();
    if (i == SIZE_MAX)
        return NULL;
    struct ff_stack *s = ff_stacks[i];
    size_t len = FF_STACK_GUARD + FF_STACK_SIZE;
    char *map = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (map != MAP_FAILED &&
        mprotect(map + FF_STACK_GUARD, FF_STACK_SIZE, PROT_READ | PROT_WRITE) != 0) {
        munmap(map, len);
        map = MAP_FAILED;
    }
    if (map == MAP_FAILED) {
        __atomic_store_n(&ff_slot_state[i], FF_SLOT_FREE, __ATOMIC_RELEASE);
        return NULL;
    }
    memset(s, 0, sizeof *s);
    s->map = map;
    s->map_len = len;
    s->top = map + len;
    __atomic_store_n(&ff_slot_state[i], FF_SLOT_LIVE, __ATOMIC_RELEASE);
    return s;
}

void ff_stack_free(struct ff_stack *s)
{
    if (!s)
        return;
    size_t n = __atomic_load_n(&ff_nstacks, __ATOMIC_ACQUIRE);
    for (size_t i = 0; i < n; i++) {
        if (ff_stacks[i] != s)
            continue;
        __atomic_store_n(&ff_slot_state[i], FF_SLOT_BUSY, __ATOMIC_RELEASE);
        munmap(s->map, s->map_len);
        s->map = s->top = NULL;
        __atomic_store_n(&ff_slot_state[i], FF_SLOT_FREE, __ATOMIC_RELEASE);
        return;
    }
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
