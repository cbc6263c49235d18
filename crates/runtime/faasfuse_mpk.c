/*
 * faasfuse_mpk.c - protection keys for callees isolated with
 * `merge --isolate mpk`; see faasfuse_mpk.h.
 *
 * What it protects against: a callee that reads or writes memory that is
 * not its own (a spy, a buffer overrun, a stray pointer). While it runs,
 * its caller's data and the runtime's state are behind keys its PKRU
 * closes; a touch faults, and the fault fails its call. Its code holds no
 * WRPKRU or XRSTOR bytes (`merge` scans for them), so it cannot reopen
 * them itself; a callee that forges a return into the runtime's gates
 * (control-flow hijacking) is not in that model.
 */
#define _GNU_SOURCE 1

#include <errno.h>
#include <link.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "faasfuse_mpk.h"

#ifndef SYS_pkey_mprotect
#define SYS_pkey_mprotect 329
#endif
#ifndef SYS_pkey_alloc
#define SYS_pkey_alloc 330
#endif

#define FF_PAGE 4096u
/* Each I/O region of an mpk worker: reserved, committed as touched. */
#define FF_IO_REGION ((size_t)64 << 20)
/* A region's pages beyond this are given back after a call used them. */
#define FF_IO_KEEP ((size_t)1 << 20)

/* The settings, on a page of their own made read-only once set (key 0:
 * every thread reads them, whatever its PKRU). */
union ff_mpk_page ff_mpk_page __attribute__((aligned(FF_PAGE)));

/* An mpk worker's I/O record, in its key: the callee reads and writes it.
 * It holds lengths, never pointers the runtime follows: each region lies
 * at a fixed place after the record (ff_region), which the runtime finds
 * from its own pointer to the record. */
struct ff_mpk_io {
    void *handle;    /* the image's worker handle, written by its create */
    size_t out_len;  /* what the call appended (FF_OUT) */
    int out_failed;  /* an append did not fit */
    size_t req_name; /* FF_REQ: length of the name (the input follows its NUL) */
    size_t req_len;  /* length of the input */
    size_t res_used; /* FF_RES: nested outputs of this call, in order */
    const char *res_out; /* the last nested call's output and rc */
    size_t res_out_len;
    int res_rc;
};

/* The regions after an I/O record: this call's input (NUL-terminated),
 * its output, a nested call's request, the nested calls' outputs. */
enum { FF_IN, FF_OUT, FF_REQ, FF_RES };

static char *ff_region(struct ff_mpk_io *io, int k)
{
    return (char *)io + FF_PAGE + (size_t)k * FF_IO_REGION;
}

/* Which runtime frame each I/O record belongs to (group key). */
struct ff_mpk_link {
    struct ff_mpk_io *io;
    void *frame;
    uint32_t deny;
    struct ff_mpk_link *next;
};
/* The list, in the group key; workers are made and freed on any thread. */
struct ff_mpk_links {
    struct ff_mpk_link *head;
    int lock;
};
/* The list's address lives in the settings (read-only once set), so that
 * no callee can point the runtime at a list of its own. */
#define ff_links (ff_mpk_page.cfg.links)

static void ff_links_lock(void)
{
    while (__atomic_test_and_set(&ff_links->lock, __ATOMIC_ACQUIRE))
        sched_yield();
}

static void ff_links_unlock(void)
{
    __atomic_clear(&ff_links->lock, __ATOMIC_RELEASE);
}

int faasfuse_rt_dispatch(void *ctx, const char *name, const char *input, size_t len,
                         const char **output, size_t *output_len);

static uint32_t ff_rdpkru(void)
{
    uint32_t eax, edx;
    __asm__ volatile(".byte 0x0f, 0x01, 0xee" : "=a"(eax), "=d"(edx) : "c"(0));
    return eax;
}

/*
 * The gates (the only WRPKRU sites; faasfuse_mpk.h). Each WRPKRU that
 * opens the keys opens only the runtime's (other keys of the process keep
 * the thread's rights) and is followed by a check of the value written.
 * Which keys are the runtime's they read from the settings page (key 0,
 * read-only), whatever the thread's PKRU.
 *
 * long ff_pkru_gate_call(struct ff_gate *g): g->fn(a[0..3]) on stack
 * g->stack with PKRU g->pkru. Callee-saved registers are pushed on the
 * caller's stack, whose address is left only in the stack record (group
 * key): no register the callee gets points at it. The way back finds the
 * record in the runtime's registry by the stack the callee returned on
 * (its top - 16, in a call) and resumes from the saved stack pointer
 * there, never from anything in the callee's memory. Unwinding stops at
 * the gate: an exception cannot cross it.
 */
struct ff_gate {
    struct ff_stack *stack;
    void *fn;
    uintptr_t a[4];
    uint32_t pkru;
};
long ff_pkru_gate_call(struct ff_gate *g) __attribute__((visibility("hidden")));
long ff_pkru_gate_nested(struct ff_mpk_io *io) __attribute__((visibility("hidden")));
uint64_t ff_mpk_nested(struct ff_mpk_io *io) __attribute__((visibility("hidden")));

/* Open the runtime's keys on this thread, whatever PKRU held: clear their
 * bits (ff_mpk_page.cfg.ours, first on the settings page), write, and
 * check that they are clear, else jump to `fail`. */
#define FF_OPEN_KEYS(fail)                                                                      \
    "    xorl %ecx, %ecx\n"                                                                     \
    "    rdpkru\n"                                                                              \
    "    movl ff_mpk_page(%rip), %r9d\n"                                                        \
    "    notl %r9d\n"                                                                           \
    "    andl %r9d, %eax\n"                                                                     \
    "    xorl %edx, %edx\n"                                                                     \
    "    wrpkru\n"                                                                              \
    "    testl %eax, ff_mpk_page(%rip)\n"                                                       \
    "    jnz " fail "\n"
#define FF_STR_(x) #x
#define FF_STR(x) FF_STR_(x)

__asm__(".text\n"
        ".globl ff_pkru_gate_call\n"
        ".hidden ff_pkru_gate_call\n"
        ".type ff_pkru_gate_call, @function\n"
        "ff_pkru_gate_call:\n"
        FF_SWITCH_PROLOGUE
        "    movq 0(%rdi), %r11\n"
        "    movq %rsp, 0(%r11)\n"
        "    movq 8(%r11), %rsp\n"
        "    subq $16, %rsp\n"
        "    movq 8(%rdi), %r10\n"
        "    movl 48(%rdi), %eax\n"
        "    movq 32(%rdi), %r8\n"
        "    movq 40(%rdi), %r9\n"
        "    movq 24(%rdi), %rsi\n"
        "    movq 16(%rdi), %rdi\n"
        "    xorl %ecx, %ecx\n"
        "    xorl %edx, %edx\n"
        "    .cfi_remember_state\n"
        "    .cfi_undefined %rip\n"
        "    wrpkru\n"
        "    movq %r8, %rdx\n"
        "    movq %r9, %rcx\n"
        "    xorl %ebx, %ebx\n"
        "    xorl %ebp, %ebp\n"
        "    xorl %r12d, %r12d\n"
        "    xorl %r13d, %r13d\n"
        "    xorl %r14d, %r14d\n"
        "    xorl %r15d, %r15d\n"
        "    xorl %r8d, %r8d\n"
        "    xorl %r9d, %r9d\n"
        "    xorl %r11d, %r11d\n"
        "    xorl %eax, %eax\n"
        "    call *%r10\n"
        "    movq %rax, %r8\n"
        FF_OPEN_KEYS("9f")
        "    movq %r8, %rbx\n"
        "    movq %rsp, %rdi\n"
        "    call ff_stack_returning\n"
        "    testq %rax, %rax\n"
        "    jz 9f\n"
        "    movq 0(%rax), %rsp\n"
        "    movq $0, 0(%rax)\n"
        "    movq %rbx, %rax\n"
        "    leaq " FF_STR(FF_SWITCH_FRAME) "(%rsp), %rbp\n"
        "    .cfi_restore_state\n"
        "2:\n"
        FF_SWITCH_EPILOGUE
        "9:\n"
        "    ud2\n"
        /* A faulted call resumes here, on the caller's stack (the fault
         * handler set rsp and rbp from the record), with the callee's PKRU. */
        ".globl ff_pkru_gate_recover\n"
        ".hidden ff_pkru_gate_recover\n"
        "ff_pkru_gate_recover:\n"
        FF_OPEN_KEYS("9b")
        "    movq $-1, %rax\n"
        "    jmp 2b\n"
        "    .cfi_endproc\n"
        ".size ff_pkru_gate_call, .-ff_pkru_gate_call\n"
        /* long ff_pkru_gate_nested(io): ff_mpk_nested(io) with the keys
         * open, then back to the PKRU it returns in its upper half. */
        ".globl ff_pkru_gate_nested\n"
        ".hidden ff_pkru_gate_nested\n"
        ".type ff_pkru_gate_nested, @function\n"
        "ff_pkru_gate_nested:\n"
        "    .cfi_startproc\n"
        "    endbr64\n"
        "    pushq %rbx\n"
        "    .cfi_def_cfa_offset 16\n"
        "    .cfi_offset %rbx, -16\n"
        "    movq %rdi, %rbx\n"
        FF_OPEN_KEYS("9f")
        "    movq %rbx, %rdi\n"
        "    call ff_mpk_nested\n"
        "    movq %rax, %rbx\n"
        "    shrq $32, %rax\n"
        "    xorl %ecx, %ecx\n"
        "    xorl %edx, %edx\n"
        "    wrpkru\n"
        "    movslq %ebx, %rax\n"
        "    popq %rbx\n"
        "    .cfi_def_cfa_offset 8\n"
        "    ret\n"
        "9:\n"
        "    ud2\n"
        "    .cfi_endproc\n"
        ".size ff_pkru_gate_nested, .-ff_pkru_gate_nested\n"
        /* void ff_pkru_gate_enable(void): open every key on this thread. */
        ".globl ff_pkru_gate_enable\n"
        ".hidden ff_pkru_gate_enable\n"
        ".type ff_pkru_gate_enable, @function\n"
        "ff_pkru_gate_enable:\n"
        "    .cfi_startproc\n"
        "    endbr64\n"
        FF_OPEN_KEYS("9f")
        "    ret\n"
        "9:\n"
        "    ud2\n"
        "    .cfi_endproc\n"
        ".size ff_pkru_gate_enable, .-ff_pkru_gate_enable\n");

static int ff_pkey_alloc(void)
{
    return (int)syscall(SYS_pkey_alloc, 0UL, 0UL);
}

static int ff_pkey_mprotect(void *p, size_t len, int prot, int key)
{
    return (int)syscall(SYS_pkey_mprotect, p, len, prot, key);
}

/* Fresh pages behind `key`, or NULL. */
static void *ff_keyed_map(size_t len, int key, int noreserve)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | (noreserve ? MAP_NORESERVE : 0), -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    if (ff_pkey_mprotect(p, len, PROT_READ | PROT_WRITE, key) != 0) {
        munmap(p, len);
        return NULL;
    }
    return p;
}

int ff_mpk_key_of(size_t k)
{
    for (size_t i = 0; i < ff_mpk->nkeys; i++)
        if (ff_mpk->image[i] == k)
            return ff_mpk->key[i];
    return ff_mpk->group_key;
}

struct ff_segments {
    const struct ff_table *t;
    uintptr_t table;
    int found;
    int err;
};

static int ff_image_at(const struct ff_table *t, uintptr_t a, size_t *k)
{
    for (size_t i = 0; i < t->count; i++)
        if (a >= t->images[i].span_start && a < t->images[i].span_end) {
            *k = i;
            return 1;
        }
    return 0;
}

/* Every writable segment of the fused object gets its image's key (the
 * runtime's own stay in key 0); the loader's RELRO is made read-only
 * again (mprotect keeps the key). */
static int ff_key_segments(struct dl_phdr_info *info, size_t size, void *data)
{
    struct ff_segments *s = data;
    (void)size;
    int ours = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && s->table >= lo && s->table < lo + ph->p_memsz)
            ours = 1;
    }
    if (!ours)
        return 0;
    s->found = 1;
    uintptr_t page = (uintptr_t)&ff_mpk_page;
    for (int i = 0; i < info->dlpi_phnum && !s->err; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
        size_t k;
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_W))
            continue;
        uintptr_t a = lo & ~(uintptr_t)(FF_PAGE - 1), b = (hi + FF_PAGE - 1) & ~(uintptr_t)(FF_PAGE - 1);
        if (ff_image_at(s->t, lo, &k)) {
            if (ff_pkey_mprotect((void *)a, b - a, PROT_READ | PROT_WRITE, ff_mpk_key_of(k)) != 0)
                s->err = errno;
        } else if (page >= a && page < b) {
            /* The runtime's own: its globals and GOT behind the group key,
             * all but the settings page. */
            int key = ff_mpk_page.cfg.group_key;
            if ((page > a && ff_pkey_mprotect((void *)a, page - a, PROT_READ | PROT_WRITE, key)) ||
                (b > page + FF_PAGE && ff_pkey_mprotect((void *)(page + FF_PAGE),
                                                        b - page - FF_PAGE,
                                                        PROT_READ | PROT_WRITE, key)))
                s->err = errno;
        }
    }
    for (int i = 0; i < info->dlpi_phnum && !s->err; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
        uintptr_t a = lo & ~(uintptr_t)(FF_PAGE - 1);
        uintptr_t b = (lo + ph->p_memsz) & ~(uintptr_t)(FF_PAGE - 1);
        if (ph->p_type == PT_GNU_RELRO && b > a && mprotect((void *)a, b - a, PROT_READ) != 0)
            s->err = errno;
    }
    return 1;
}

static int ff_mpk_keys(const struct ff_table *t)
{
    struct ff_mpk_cfg *c = &ff_mpk_page.cfg;
    if ((c->group_key = ff_pkey_alloc()) < 0)
        return errno;
    c->ours = 3u << (2 * c->group_key);
    for (size_t k = 1; k < t->count; k++) {
        if (!(t->images[k].flags & FF_IMAGE_ISOLATE_MPK))
            continue;
        if (c->nkeys == sizeof c->key / sizeof c->key[0])
            return ENOSPC;
        int key = ff_pkey_alloc();
        if (key < 0)
            return errno;
        c->image[c->nkeys] = k;
        c->key[c->nkeys++] = key;
        c->ours |= 3u << (2 * key);
    }
    struct ff_segments s = {t, (uintptr_t)t, 0, 0};
    dl_iterate_phdr(ff_key_segments, &s);
    if (s.err)
        return s.err;
    if (!s.found)
        return ENOENT;
    c->links = ff_keyed_map(FF_PAGE, c->group_key, 0);
    return c->links ? 0 : errno;
}

void ff_mpk_setup(const struct ff_table *t)
{
    int any = 0;
    for (size_t k = 1; k < t->count; k++)
        any |= !!(t->images[k].flags & FF_IMAGE_ISOLATE_MPK);
    if (!any)
        return;
    struct ff_mpk_cfg *c = &ff_mpk_page.cfg;
    int err = ff_mpk_keys(t);
    if (err)
        c->failed = err;
    else
        c->active = 1;
    if (mprotect(&ff_mpk_page, sizeof ff_mpk_page, PROT_READ) != 0 && c->active) {
        /* Settings a callee could rewrite are no protection. */
        c->active = 0;
        c->failed = errno;
    }
}

void ff_mpk_enter(void)
{
    if (__builtin_expect(ff_mpk->active, 0) && (ff_rdpkru() & ff_mpk->ours))
        ff_pkru_gate_enable();
}

void *ff_state_alloc(size_t n)
{
    if (!ff_mpk->active)
        return calloc(1, n);
    if (n > SIZE_MAX - 2 * FF_PAGE)
        return NULL;
    size_t len = (n + 16 + FF_PAGE - 1) & ~(size_t)(FF_PAGE - 1);
    char *p = ff_keyed_map(len, ff_mpk->group_key, 0);
    if (!p)
        return NULL;
    memcpy(p, &len, sizeof len);
    return p + 16;
}

void ff_state_free(void *p)
{
    if (!ff_mpk->active) {
        free(p);
        return;
    }
    if (!p)
        return;
    char *base = (char *)p - 16;
    size_t len;
    memcpy(&len, base, sizeof len);
    munmap(base, len);
}

/* The I/O record (a page) and its regions: input, output, nested request,
 * nested outputs, each FF_IO_REGION. */
#define FF_IO_MAP (FF_PAGE + 4 * FF_IO_REGION)

int ff_mpk_worker_new(struct ff_mpk_worker *m, struct ff_stack *s, size_t image, void *frame)
{
    m->key = ff_mpk_key_of(image);
    m->deny = ff_mpk->ours & ~(3u << (2 * m->key));
    char *base = ff_keyed_map(FF_IO_MAP, m->key, 1);
    if (!base)
        return -1;
    struct ff_mpk_io *io = (struct ff_mpk_io *)base;
    struct ff_mpk_link *l = ff_state_alloc(sizeof *l);
    if (!l || ff_mpk_key_stack(s, m->key) != 0) {
        ff_state_free(l);
        munmap(base, FF_IO_MAP);
        return -1;
    }
    l->io = io;
    l->frame = frame;
    l->deny = m->deny;
    ff_links_lock();
    l->next = ff_links->head;
    ff_links->head = l;
    ff_links_unlock();
    m->io = io;
    return 0;
}

void ff_mpk_worker_free(struct ff_mpk_worker *m)
{
    if (!m->io)
        return;
    struct ff_mpk_link *dead = NULL;
    ff_links_lock();
    for (struct ff_mpk_link **p = &ff_links->head; *p; p = &(*p)->next)
        if ((*p)->io == m->io) {
            dead = *p;
            *p = dead->next;
            break;
        }
    ff_links_unlock();
    ff_state_free(dead);
    munmap(m->io, FF_IO_MAP);
    m->io = NULL;
}

int ff_mpk_key_stack(struct ff_stack *s, int key)
{
    return ff_pkey_mprotect(s->top - FF_STACK_SIZE, FF_STACK_SIZE, PROT_READ | PROT_WRITE, key);
}

static uint32_t ff_callee_pkru(const struct ff_mpk_worker *m)
{
    return (ff_rdpkru() & ~ff_mpk->ours) | m->deny;
}

/* The nested call of a callee, with the keys open (ff_pkru_gate_nested).
 * Reads only what the callee copied into its record, writes only there.
 * Returns the rc in the lower half, the callee's PKRU in the upper. */
uint64_t ff_mpk_nested(struct ff_mpk_io *io)
{
    ff_links_lock();
    struct ff_mpk_link *l = ff_links->head;
    while (l && l->io != io)
        l = l->next;
    void *frame = l ? l->frame : NULL;
    uint32_t deny = l ? l->deny : 0;
    ff_links_unlock();
    if (!frame) /* not a record of ours: no way back to a callee's PKRU */
        abort();
    uint32_t back = (ff_rdpkru() & ~ff_mpk->ours) | deny;
    const char *out = NULL;
    size_t out_len = 0;
    int rc = -1;
    size_t name = io->req_name, len = io->req_len;
    if (name < FF_IO_REGION && len < FF_IO_REGION - name - 1) {
        char *req = ff_region(io, FF_REQ);
        req[name] = '\0';
        rc = faasfuse_rt_dispatch(frame, req, req + name + 1, len, &out, &out_len);
    }
    io->res_out = NULL;
    io->res_out_len = 0;
    if (rc == 0) {
        size_t used = io->res_used;
        if (used <= FF_IO_REGION && out_len < FF_IO_REGION - used) {
            char *dst = ff_region(io, FF_RES) + used;
            memcpy(dst, out, out_len);
            dst[out_len] = '\0';
            io->res_used = used + out_len + 1;
            io->res_out = dst;
            io->res_out_len = out_len;
        } else {
            rc = -1;
        }
    }
    io->res_rc = rc;
    return (uint64_t)back << 32 | (uint32_t)rc;
}

/* Copies for the code that runs with a callee's PKRU: no library call,
 * since the runtime's GOT is behind the group key. */
static inline void ff_move(char *d, const char *s, size_t n)
{
    __asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
}

static inline size_t ff_name_len(const char *s, size_t max)
{
    size_t n = 0;
    while (n < max && ((const volatile char *)s)[n])
        n++;
    return n;
}

/* invoke_fn of an mpk callee's worker: runs with the callee's PKRU. */
static int ff_mpk_invoke(void *ctx, const char *name, const char *input, size_t len,
                         const char **output, size_t *output_len)
{
    struct ff_mpk_io *io = ctx;
    if (!io || !name || !output || !output_len)
        return -1;
    size_t n = ff_name_len(name, 4096);
    if (!input)
        len = 0;
    if (n == 4096 || len >= FF_IO_REGION - n - 1) {
        *output = NULL;
        *output_len = 0;
        return -1;
    }
    char *req = ff_region(io, FF_REQ);
    ff_move(req, name, n);
    if (len)
        ff_move(req + n + 1, input, len);
    io->req_name = n;
    io->req_len = len;
    int rc = (int)ff_pkru_gate_nested(io);
    *output = rc == 0 ? io->res_out : NULL;
    *output_len = rc == 0 ? io->res_out_len : 0;
    return rc;
}

/* append_fn of an mpk callee's worker: runs with the callee's PKRU. */
static void ff_mpk_append(void *ctx, const char *data, size_t len)
{
    struct ff_mpk_io *io = ctx;
    if (!io || !data || len == 0 || io->out_failed)
        return;
    if (io->out_len > FF_IO_REGION || len > FF_IO_REGION - io->out_len) {
        io->out_failed = 1;
        return;
    }
    ff_move(ff_region(io, FF_OUT) + io->out_len, data, len);
    io->out_len += len;
}

int ff_mpk_create(struct ff_mpk_worker *m, struct ff_stack *s,
                  int (*create)(void *, faas_invoke_fn, faas_append_fn, void **), void **handle)
{
    struct ff_gate g = {s,
                        (void *)create,
                        {(uintptr_t)m->io, (uintptr_t)ff_mpk_invoke, (uintptr_t)ff_mpk_append,
                         (uintptr_t)&m->io->handle},
                        ff_callee_pkru(m)};
    int rc = (int)ff_pkru_gate_call(&g);
    *handle = m->io->handle;
    return rc;
}

/* Give back what a large input or output committed. */
static void ff_trim(char *region, size_t used)
{
    if (used > FF_IO_KEEP)
        madvise(region + FF_IO_KEEP, used - FF_IO_KEEP, MADV_DONTNEED);
}

int ff_mpk_call(struct ff_mpk_worker *m, struct ff_stack *s,
                int (*fn)(void *, const char *, size_t), void *handle, const char *input,
                size_t len, const char **out, size_t *out_len)
{
    struct ff_mpk_io *io = m->io;
    if (!input)
        len = 0;
    if (len >= FF_IO_REGION)
        return -1;
    /* The last call's output has been copied out by now. */
    size_t last = io->out_len;
    ff_trim(ff_region(io, FF_OUT), last > FF_IO_REGION ? FF_IO_REGION : last);
    char *in = ff_region(io, FF_IN);
    if (len)
        memcpy(in, input, len);
    in[len] = '\0';
    io->out_len = 0;
    io->out_failed = 0;
    io->res_used = 0;
    struct ff_gate g = {s,
                        (void *)fn,
                        {(uintptr_t)handle, (uintptr_t)in, len, 0},
                        ff_callee_pkru(m)};
    int rc = (int)ff_pkru_gate_call(&g);
    size_t n = io->out_len;
    *out = io->out_failed || n > FF_IO_REGION ? NULL : ff_region(io, FF_OUT);
    *out_len = *out ? n : 0;
    ff_trim(in, len + 1);
    size_t used = io->res_used;
    ff_trim(ff_region(io, FF_RES), used > FF_IO_REGION ? FF_IO_REGION : used);
    return rc;
}
