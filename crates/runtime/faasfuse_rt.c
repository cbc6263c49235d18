/*
 * faasfuse_rt.c - the fusion runtime.
 *
 * `faasfuse merge` copies this image into every fused shared object. It
 * exports the four worker_v1 entry points in place of the root function's
 * and wraps them: the root's worker gets a runtime frame as caller_ctx and
 * the runtime's own invoke/append, so a nested call to an image in the fused
 * table runs in-process. A call to any other name goes to the host's invoke
 * unchanged.
 *
 * The process model is nightcore's (src/worker/v1 of the platform): each
 * function's process creates exactly one worker, before any request, and is
 * never re-entered while it runs a call (a nested call to a busy function
 * goes to another process). Functions may rely on that and keep per-process
 * state in globals (their caller context, a static scratch buffer). So:
 * - faas_create_func_worker creates one worker per fused image, callees
 *   first, then the root's, and every call reuses it;
 * - a call into an image that is already running on this call stack goes to
 *   the host's invoke as a real RPC (the platform serves it in another
 *   process), unless the image is flagged re-entrant: then an extra worker,
 *   created on first use, serves it in-process;
 * - every fused call gets a private copy of its input followed by a NUL, as
 *   a worker process receives it;
 * - a worker's context serves nested calls and appends only on the thread
 *   running that worker's call; from any other thread, or while it runs no
 *   call, they fail (-1) with one line on stderr, never touching shared
 *   state (stricter than nightcore's worker, which takes them from any
 *   thread and aborts the process only when two nested calls overlap).
 *
 * Semantics follow the platform: a failing callee gives -1 (*output NULL)
 * and its output is discarded; a nested output stays valid until the
 * caller's own call ends (it is kept in the caller's arena, reset then); a
 * nesting depth above FF_MAX_DEPTH fails, counted from the depth at which
 * faasfuse's host runs the root (ff_find_host), host RPCs included.
 *
 * A callee flagged FF_IMAGE_ISOLATE_STACK runs on a stack of its own: its
 * frame's `call` is ff_call_isolated, which switches stacks around the
 * image's own entry point (faasfuse_stack.h), so the hot path below is the
 * same for every image. A fault on that stack fails the call; the worker
 * whose code faulted stays busy for good (the host serves its function
 * from then on) and the calls abandoned between it and the isolated one
 * are idle again (ff_recover).
 *
 * The fused call is the hot path (issue #15): faasfuse_rt_call_image and
 * rt_append test what they must with one branch each, keep per-call state
 * in the callee's frame (no allocation), copy short inputs and appends
 * inline, and hand everything else (long data, a busy or re-entered image,
 * refusals, failures) to noinline slow paths, so that gcc keeps the fast
 * path free of library calls and saved registers.
 */
#define _GNU_SOURCE 1

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "faasfuse_rt.h"
#include "faasfuse_mpk.h"
#include "faasfuse_stack.h"

/* dlsym as glibc 2.2.5 has it (in libdl there): the default version of
 * glibc >= 2.34 would raise the glibc a fused image needs. */
__asm__(".symver dlsym,dlsym@GLIBC_2.2.5");

/* Arena chunk holding nested outputs; the newest chunk heads the list. */
struct ff_chunk {
    struct ff_chunk *next;
    size_t cap;
    char data[];
};

/* A worker keeps one chunk up to this size for reuse when its call ends. */
#define FF_CHUNK_REUSE (1u << 20)
/* First chunk and input buffer of every worker, allocated with it: a call
 * with small inputs and outputs allocates nothing. */
#define FF_CHUNK_MIN 4000u
#define FF_INPUT_MIN 256u
/* Inputs that ff_copy_small copies always fit: no capacity check. */
_Static_assert(FF_INPUT_MIN > 16, "input buffer holds a small input and its NUL");

struct ff_worker;

/* One worker of one image; its address is the caller_ctx that image passes
 * back to faasfuse_rt_dispatch/rt_append. Allocated once, never moved.
 * The fields a fused call touches come first. */
struct ff_frame {
    /* Thread pointer of the thread running this worker's call, NULL while
     * it is idle: the one compare that admits a nested call or an append
     * (atomic: other threads read it). */
    void *owner;
    /* This worker's arena: the outputs of its call's nested calls lie
     * before `top`, kept until its call ends, in chunks of which the
     * newest ends at `end`. The output of the nested call running now is
     * built in place at [top, cur) (this worker is blocked meanwhile, so
     * nothing else writes there): one copy per appended byte, and the
     * callee's appends and commit meet at one cursor. cur == top between
     * nested calls; cur == end == NULL once an append failed. */
    char *top;
    char *end;
    char *cur; /* not next to top: gcc would pair their stores in a vector */
    /* The worker this call returns to; &ff_host for the root's own
     * worker. Nesting depth is the length of this chain. */
    struct ff_frame *caller;
    int (*call)(void *handle, const char *input, size_t len);
    void *handle;
    char *in; /* private NUL-terminated copy of this call's input */
    struct ff_worker *w;
    const char **ret; /* where this call's output goes */
    size_t *ret_len;
    /* `top` when the arena holds nothing; NULL once an append of the
     * running call failed. Either way, top != base sends the end of the
     * call to ff_finish_slow. */
    char *base;
    /* Slow paths only. */
    size_t in_cap;
    struct ff_chunk *chunks; /* newest first */
    size_t image;
    struct ff_frame *extra; /* next worker of a re-entrant image, or NULL */
    /* FF_IMAGE_ISOLATE_STACK: its own stack, and the image's entry point
     * and handle (`call` and `handle` are ff_call_isolated and the frame). */
    struct ff_stack *stack;
    int (*image_call)(void *handle, const char *input, size_t len);
    void *image_handle;
    /* FF_IMAGE_ISOLATE_MPK: its I/O record and key (io NULL otherwise). */
    struct ff_mpk_worker mpk;
    int suspect; /* it faulted: never called or destroyed again */
    int in_host; /* its call waits for an RPC the host serves */
};

/* What faas_create_func_worker returns: one worker per fused image. */
struct ff_worker {
    /* Images k < fast_count are entered without counting the depth: all
     * of them while no extra worker runs and base_depth + count <=
     * FF_MAX_DEPTH (each image then runs at most once, so the depth stays
     * below that), none otherwise. First: tests read it (iso_driver.c). */
    size_t fast_count;
    /* Depth of the root's call as the host counts it (faasfuse's host
     * tells; 0 elsewhere): fused calls nest below it, and an RPC to the
     * host carries the depth of its caller, so one limit bounds chains
     * that alternate host RPCs and fused calls. */
    size_t base_depth;
    /* faasfuse's host only (found by name in the process): the root call's
     * depth, and invoke with the caller's depth. */
    uint32_t (*host_depth)(void *host_ctx);
    int (*host_invoke_at)(void *host_ctx, uint32_t depth, const char *name, const char *input,
                          size_t len, const char **output, size_t *output_len);
    void *host_ctx;
    faas_invoke_fn host_invoke;
    faas_append_fn host_append;
    const struct ff_table *table;
    size_t count;
    const char *cached_name; /* last name pointer found in the table ... */
    size_t cached_index;     /* ... and where (re-checked with strcmp) */
    void *stack_thread;      /* the thread made ready for isolated stacks */
    struct ff_frame *frames[]; /* [image]: its one worker */
};

_Static_assert(offsetof(struct ff_worker, fast_count) == 0, "tests read fast_count first");

/* Set by the constructor only: a callee's RELRO range could not be made
 * read-only (ld.so would have refused to load such an image). */
static int ff_relro_failed;

static const char ff_empty[1] = "";

/* The caller of the root's own worker: the host. Its arena has no room, so
 * the root's appends take the slow path, which hands them to the host. */
static struct ff_frame ff_host;

static const struct ff_table *ff_table(void)
{
    const struct ff_table *t = &faasfuse_fused_table;
    if (t->magic != FF_TABLE_MAGIC || t->count == 0 ||
        t->count > SIZE_MAX / sizeof(struct ff_frame *) - 1)
        return NULL;
    return t;
}

__attribute__((constructor)) static void ff_protect_relro(void)
{
    const struct ff_table *t = ff_table();
    if (!t)
        return;
    ff_mpk_setup(t);
    long ps = sysconf(_SC_PAGESIZE);
    uintptr_t mask = ~((uintptr_t)(ps > 0 ? ps : 4096) - 1);
    for (size_t i = 1; i < t->count; i++) {
        uintptr_t s = t->images[i].relro_start & mask;
        uintptr_t e = t->images[i].relro_end & mask;
        if (e > s && mprotect((void *)s, e - s, PROT_READ) != 0)
            ff_relro_failed = 1;
    }
}

/* Copy n <= 16 bytes without a library call (the short inputs and
 * appends of the fused-call path): overlapping loads and stores of the
 * widest size that fits, the shortest sizes tested first. Returns 0,
 * copying nothing, when n > 16. */
static inline __attribute__((always_inline)) int ff_copy_small(char *dst, const char *src,
                                                               size_t n)
{
    if (n - 1 < 3) {
        dst[0] = src[0];
        if (n > 1) {
            uint16_t a;
            __builtin_memcpy(&a, src + n - 2, 2);
            __builtin_memcpy(dst + n - 2, &a, 2);
        }
    } else if (n - 4 < 5) {
        uint32_t a, b;
        __builtin_memcpy(&a, src, 4);
        __builtin_memcpy(&b, src + n - 4, 4);
        __builtin_memcpy(dst, &a, 4);
        __builtin_memcpy(dst + n - 4, &b, 4);
    } else if (n - 9 < 8) {
        uint64_t a, b;
        __builtin_memcpy(&a, src, 8);
        __builtin_memcpy(&b, src + n - 8, 8);
        __builtin_memcpy(dst, &a, 8);
        __builtin_memcpy(dst + n - 8, &b, 8);
    } else if (n != 0) {
        return 0;
    }
    return 1;
}

static inline __attribute__((always_inline)) void ff_copy(char *dst, const char *src, size_t n)
{
    if (!ff_copy_small(dst, src, n))
        memcpy(dst, src, n);
}

/* Does this thread run f's call now? Anything else must not touch f. */
static inline __attribute__((always_inline)) int ff_runs_here(const struct ff_frame *f)
{
    /* The thread pointer identifies the thread (glibc: pthread_self()). */
    return __atomic_load_n(&f->owner, __ATOMIC_ACQUIRE) == __builtin_thread_pointer();
}

static struct ff_chunk *ff_chunk_new(size_t cap)
{
    struct ff_chunk *c = ff_state_alloc(sizeof *c + cap);
    if (c) {
        c->next = NULL;
        c->cap = cap;
    }
    return c;
}

/* f's arena holds nothing again: its nested outputs expire. One chunk up
 * to FF_CHUNK_REUSE stays (there always is one: the first is smaller).
 * Returns rc, so that the fused-call path can tail-call it. */
static __attribute__((noinline)) int ff_reset_arena(struct ff_frame *f, int rc)
{
    struct ff_chunk *keep = NULL;
    for (struct ff_chunk *c = f->chunks, *next; c; c = next) {
        next = c->next;
        if (!keep && c->cap <= FF_CHUNK_REUSE)
            keep = c;
        else
            ff_state_free(c);
    }
    keep->next = NULL;
    f->chunks = keep;
    f->base = f->top = f->cur = keep->data;
    f->end = keep->data + keep->cap;
    return rc;
}

static void ff_frame_free(struct ff_frame *f)
{
    ff_stack_free(f->stack);
    for (struct ff_chunk *c = f->chunks, *next; c; c = next) {
        next = c->next;
        ff_state_free(c);
    }
    ff_state_free(f->in);
    ff_mpk_worker_free(&f->mpk);
    ff_state_free(f);
}

/* Room for `len` more bytes and the NUL of f's output: a new chunk heads
 * the caller's arena and the output built so far moves there; earlier
 * outputs stay where they are. */
static int ff_grow_output(struct ff_frame *f, size_t len)
{
    struct ff_frame *c = f->caller;
    size_t have = (size_t)(c->cur - c->top);
    if (len > SIZE_MAX / 4 || have > SIZE_MAX / 4)
        return -1;
    size_t need = have + len + 1;
    struct ff_chunk *n = ff_chunk_new(need > FF_CHUNK_MIN / 2 ? 2 * need : FF_CHUNK_MIN);
    if (!n)
        return -1;
    if (have)
        memcpy(n->data, c->top, have);
    n->next = c->chunks;
    c->chunks = n;
    c->top = n->data;
    c->cur = n->data + have;
    c->end = n->data + n->cap;
    return 0;
}

/* The nested call of c ended without an output: its cursor goes back to
 * `top` (and its room to the end of its newest chunk, after a failed
 * append). No library call: this runs while an exception unwinds too. */
static inline __attribute__((always_inline)) void ff_discard_output(struct ff_frame *c)
{
    c->cur = c->top;
    c->end = c->chunks->data + c->chunks->cap;
}

/* The invoke_fn every fused image's workers get (tier 0: name lookup per
 * call), and what lowered RPC sites call directly: the dispatcher (tier 1)
 * and, through a per-callee entry stub that passes the callee's table index
 * in place of its name, the callee itself (tier 2). `faasfuse merge` finds
 * both by name in this image's symbol table. call_image is only reached by
 * direct jumps: no indirect-branch landing pad. */
int faasfuse_rt_dispatch(void *ctx, const char *name, const char *input, size_t len,
                         const char **output, size_t *output_len);
__attribute__((nocf_check)) int faasfuse_rt_call_image(void *ctx, size_t k, const char *input,
                                                       size_t len, const char **output,
                                                       size_t *output_len);

static __attribute__((noinline, cold)) void ff_refuse_thread(const struct ff_frame *f,
                                                             const char *what,
                                                             const char *callee)
{
    const struct ff_image *im = &f->w->table->images[f->image];
    fprintf(stderr,
            "faasfuse: %s %s%s from a second thread or outside a call: refused "
            "(one call at a time per process, on the thread that runs it)\n",
            im->name ? im->name : "?", what, callee ? callee : "");
}

/* Everything rt_append's fast path leaves out: refusals, the root's own
 * output (to the host), a failed append, a full chunk. */
static __attribute__((noinline)) void ff_append_slow(struct ff_frame *f, const char *data,
                                                     size_t len)
{
    if (!f || !data || len == 0)
        return;
    if (!ff_runs_here(f)) {
        ff_refuse_thread(f, "appended output", NULL);
        return;
    }
    struct ff_frame *c = f->caller;
    if (c == &ff_host) {
        struct ff_worker *w = f->w;
        if (w->host_append)
            w->host_append(w->host_ctx, data, len);
        return;
    }
    if (!c->cur)
        return; /* an earlier append failed: the output is discarded */
    if ((size_t)(c->end - c->cur) <= len && ff_grow_output(f, len) != 0) {
        c->cur = c->end = NULL;
        f->base = NULL;
        return;
    }
    ff_copy(c->cur, data, len);
    c->cur += len;
}

static void rt_append(void *ctx, const char *data, size_t len)
{
    struct ff_frame *f = ctx;
    /* The root's output goes to the host on the slow path (ff_host has no
     * room), as do long appends (a memcpy call would make this function
     * save registers). */
    if (__builtin_expect(!f || !ff_runs_here(f) || !data, 0)) {
        ff_append_slow(f, data, len);
        return;
    }
    struct ff_frame *c = f->caller;
    char *cur = c->cur;
    if (__builtin_expect(len >= (size_t)(c->end - cur) || !ff_copy_small(cur, data, len), 0)) {
        ff_append_slow(f, data, len);
        return;
    }
    c->cur = cur + len;
}

/* Index of `name` in the table, or SIZE_MAX. */
static size_t ff_lookup(struct ff_worker *w, const char *name)
{
    const struct ff_image *im = w->table->images;
    /* Same pointer as last time: most call sites pass one constant string.
     * A reused buffer may hold another name now, hence the strcmp. */
    if (name == w->cached_name && strcmp(name, im[w->cached_index].name) == 0)
        return w->cached_index;
    for (size_t i = 0; i < w->count; i++) {
        if (im[i].name && strcmp(name, im[i].name) == 0) {
            w->cached_name = name;
            w->cached_index = i;
            return i;
        }
    }
    return SIZE_MAX;
}

/* The fused call running in-process below g on this thread: the busy,
 * unretired worker g called, or NULL. */
static struct ff_frame *ff_callee_of(struct ff_worker *w, const struct ff_frame *g)
{
    for (size_t i = 0; i < w->count; i++)
        for (struct ff_frame *h = w->frames[i]; h; h = h->extra)
            if (h != g && h->caller == g && !h->suspect &&
                __atomic_load_n(&h->owner, __ATOMIC_ACQUIRE))
                return h;
    return NULL;
}

static void ff_report_fault(const struct ff_frame *f, const struct ff_frame *inner, int in_host)
{
    const struct ff_image *im = f->w->table->images;
    const char *name = im[f->image].name ? im[f->image].name : "?";
    const char *who = im[inner->image].name ? im[inner->image].name : "?";
    int sig = f->stack->fault_sig;
    unsigned long at = (unsigned long)f->stack->fault_addr;
    if (in_host)
        fprintf(stderr,
                "faasfuse: a function the host serves (called by %s) faulted (signal %d at %#lx) "
                "on the isolated stack of %s: %s's call fails with -1; the host retires that "
                "function's worker\n",
                who, sig, at, name, name);
    else if (inner == f)
        fprintf(stderr,
                "faasfuse: %s faulted (signal %d at %#lx) on its isolated stack: the call fails "
                "with -1 and the host serves %s from now on\n",
                name, sig, at, name);
    else
        fprintf(stderr,
                "faasfuse: %s faulted (signal %d at %#lx) on the isolated stack of %s: %s's "
                "call fails with -1 and the host serves %s from now on\n",
                who, sig, at, name, name, who);
}

/* After a fault on f's stack. The fused calls running there form a chain
 * f -> ... -> inner (in-process calls below f; an isolated callee would
 * have faulted on its own stack). The one that faulted is the innermost
 * code running: inner itself, which is retired (suspect: busy for good,
 * the host serves its function from then on, never called or destroyed
 * again), unless inner was waiting for an RPC the host serves: then the
 * host's code faulted, the host retires its own worker (crates/host), and
 * no fused worker is retired. Every other call of the chain was abandoned
 * mid-way: it fails, its worker is idle again and its arena reset (the
 * outputs of its nested calls gone); f's own call fails with -1
 * (ff_finish_slow ends it, and leaves it busy for good if it is the one
 * retired). */
static void ff_recover(struct ff_frame *f)
{
    struct ff_frame *inner = f;
    for (struct ff_frame *h; (h = ff_callee_of(f->w, inner));)
        inner = h;
    int in_host = inner->in_host;
    ff_report_fault(f, inner, in_host);
    for (struct ff_frame *g = inner; g != f; g = g->caller) {
        int retire = g == inner && !in_host;
        g->in_host = 0;
        g->suspect = retire;
        ff_reset_arena(g, 0);
        __atomic_store_n(&g->owner, retire ? (void *)&ff_host : NULL, __ATOMIC_RELEASE);
    }
    f->in_host = 0;
    f->suspect = inner == f && !in_host;
}

/* f's call on its own stack (f->call of an isolated image; its handle is
 * f); ff_recover after a fault. The fast path's depth shortcut is as it
 * was when the call began: ff_call_slow calls abandoned by the fault never
 * ran their cleanup. */
static int ff_call_isolated(void *handle, const char *input, size_t len)
{
    struct ff_frame *f = handle;
    struct ff_worker *w = f->w;
    void *me = __builtin_thread_pointer();
    if (w->stack_thread != me) {
        ff_stack_thread_ready();
        w->stack_thread = me;
    }
    size_t fast_count = w->fast_count;
    int rc;
    if (f->mpk.io) {
        const char *out;
        size_t out_len;
        rc = ff_mpk_call(&f->mpk, f->stack, f->image_call, f->image_handle, input, len, &out,
                         &out_len);
        if (!f->stack->faulted) {
            /* Its appends, kept in its own key, reach its caller now. */
            if (rc == 0 && !out)
                rc = -1;
            else if (rc == 0 && out_len)
                rt_append(f, out, out_len);
            return rc;
        }
    } else {
        rc = ff_stack_call(f->stack, f->image_call, f->image_handle, input, len);
        if (__builtin_expect(!f->stack->faulted, 1))
            return rc;
    }
    f->stack->faulted = 0;
    w->fast_count = fast_count;
    ff_recover(f);
    return -1;
}

/* Create a worker of image k, with its first chunk and input buffer. */
static struct ff_frame *ff_frame_new(struct ff_worker *w, size_t k, int *rc)
{
    const struct ff_image *im = &w->table->images[k];
    *rc = -1;
    if (!im->create || !im->call)
        return NULL;
    struct ff_frame *f = ff_state_alloc(sizeof *f);
    if (!f)
        return NULL;
    f->chunks = ff_chunk_new(FF_CHUNK_MIN);
    f->in = ff_state_alloc(FF_INPUT_MIN);
    if (!f->chunks || !f->in) {
        ff_frame_free(f);
        return NULL;
    }
    f->in_cap = FF_INPUT_MIN;
    f->base = f->top = f->cur = f->chunks->data;
    f->end = f->chunks->data + f->chunks->cap;
    f->w = w;
    f->image = k;
    f->call = im->call;
    f->caller = &ff_host;
    if (im->flags & FF_IMAGE_ISOLATE_STACK) {
        f->stack = ff_stack_new();
        if (!f->stack) {
            ff_frame_free(f);
            return NULL;
        }
        f->image_call = im->call;
        f->call = ff_call_isolated;
        int keyed = 0;
        if (im->flags & FF_IMAGE_ISOLATE_MPK) {
            keyed = ff_mpk->active ? ff_mpk_worker_new(&f->mpk, f->stack, k, f) : -1;
            f->stack->resume = ff_pkru_gate_recover;
        } else if (ff_mpk->active) {
            keyed = ff_mpk_key_stack(f->stack, ff_mpk->group_key);
        }
        if (keyed != 0) {
            ff_frame_free(f);
            return NULL;
        }
    }
    void *h = NULL;
    if (f->mpk.io)
        *rc = ff_mpk_create(&f->mpk, f->stack, im->create, &h);
    else
        *rc = im->create(f, faasfuse_rt_dispatch, rt_append, &h);
    if (*rc != 0) {
        ff_frame_free(f);
        return NULL;
    }
    if (f->stack) {
        f->image_handle = h;
        f->handle = f;
    } else {
        f->handle = h;
    }
    return f;
}

/* Nesting depth of f's call as the host counts it: the root's call runs at
 * the worker's base_depth. */
static size_t ff_depth(const struct ff_frame *f)
{
    size_t d = f->w->base_depth;
    for (; f->caller != &ff_host; f = f->caller)
        d++;
    return d;
}

/* End of a worker's call: it is idle again, and its own nested outputs
 * expire. */
static inline __attribute__((always_inline)) void ff_end_call(struct ff_frame *f)
{
    /* An atomic store: gcc drops a plain one on the unwinding path as dead
     * before the noreturn _Unwind_Resume. */
    __atomic_store_n(&f->owner, NULL, __ATOMIC_RELEASE);
    if (__builtin_expect(f->top != f->base, 0))
        ff_reset_arena(f, 0);
}

/* Cleanup of the root's call. */
static void ff_end_root_call(struct ff_frame **root)
{
    ff_end_call(*root);
}

/* Cleanup of a nested call's frame variable, which is cleared when the
 * callee returns: only an exception unwinding finds it set. The worker is
 * idle again (an atomic store, as in ff_end_call) and its partial output
 * is dropped; its own arena is reset when a later call of it ends (top !=
 * base), so this makes no call, which would make the fast path keep the
 * exception in one more saved register. */
static inline __attribute__((always_inline)) void ff_end_unwound(struct ff_frame **running)
{
    if (*running) {
        __atomic_store_n(&(*running)->owner, NULL, __ATOMIC_RELEASE);
        ff_discard_output((*running)->caller);
    }
}

/* f->in := input[0, len), NUL-terminated, when that takes a library
 * call: a longer input, a larger buffer. NULL when out of memory. */
static __attribute__((noinline)) char *ff_copy_input_slow(struct ff_frame *f, const char *input,
                                                          size_t len)
{
    if (!input)
        len = 0;
    if (len >= f->in_cap) {
        if (len > SIZE_MAX / 2)
            return NULL;
        char *p = ff_state_alloc(2 * len);
        if (!p)
            return NULL;
        ff_state_free(f->in);
        f->in = p;
        f->in_cap = 2 * len;
    }
    ff_copy(f->in, input, len);
    f->in[len] = '\0';
    return f->in;
}

static int ff_fail(const char **output, size_t *output_len)
{
    *output = NULL;
    *output_len = 0;
    return -1;
}

static __attribute__((noinline)) int ff_call_slow(struct ff_frame *caller, size_t k,
                                                  const char *input, size_t len,
                                                  const char **output, size_t *output_len);

/* Commit f's output, built at the tail of its caller's arena: it stays
 * there, NUL-terminated, until the caller's call ends. */
static inline __attribute__((always_inline)) int ff_commit(struct ff_frame *f)
{
    struct ff_frame *caller = f->caller;
    char *out = caller->top, *end = caller->cur;
    size_t n = (size_t)(end - out);
    if (n == 0) {
        /* Takes no room: `top` may be at the chunk's end. */
        *f->ret = ff_empty;
    } else {
        *end = '\0';
        caller->top = caller->cur = end + 1;
        *f->ret = out;
    }
    *f->ret_len = n;
    return 0;
}

/* The end of a call that failed, or after which f's arena is reset or an
 * append failed. */
static __attribute__((noinline)) int ff_finish_slow(struct ff_frame *f, int rc)
{
    ff_reset_arena(f, 0);
    if (f->suspect) /* busy for good: later calls go to ff_call_slow */
        __atomic_store_n(&f->owner, (void *)&ff_host, __ATOMIC_RELEASE);
    if (rc != 0 || !f->caller->cur) {
        ff_discard_output(f->caller);
        return ff_fail(f->ret, f->ret_len);
    }
    return ff_commit(f);
}

/* Run one call of the idle worker f for `caller`, on the thread `me`. The
 * platform's rules: a private NUL-terminated copy of the input; a failing
 * callee gives -1 and its output is discarded; the output stays valid (in
 * the caller's arena) until the caller's own call ends. `fast`: inlined in
 * the entry points, where anything unusual (a long or NULL input) goes to
 * ff_call_slow, so that no library call sits on this path and only f is
 * live across the callee's call. */
static inline __attribute__((always_inline)) int
ff_run(struct ff_frame *caller, struct ff_frame *f, void *me, const char *input, size_t len,
       const char **output, size_t *output_len, int fast)
{
    char *in = f->in;
    if (__builtin_expect(input && ff_copy_small(in, input, len), 1))
        in[len] = '\0';
    else if (fast)
        return ff_call_slow(caller, f->image, input, len, output, output_len);
    else if ((in = ff_copy_input_slow(f, input, len)))
        len = input ? len : 0;
    else
        return ff_fail(output, output_len);
    f->caller = caller;
    /* Kept in the frame, not in registers saved around the call. */
    f->ret = output;
    f->ret_len = output_len;
    int rc;
    {
        /* An exception thrown by the callee unwinds through here into its
         * caller (-fexceptions): the cleanup still marks the worker idle. */
        struct ff_frame *unwinding __attribute__((cleanup(ff_end_unwound))) = f;
        __atomic_store_n(&f->owner, me, __ATOMIC_RELEASE);
        rc = f->call(f->handle, in, len);
        unwinding = NULL;
    }
    __atomic_store_n(&f->owner, NULL, __ATOMIC_RELEASE);
    if (__builtin_expect(rc != 0 || f->top != f->base, 0))
        return ff_finish_slow(f, rc);
    return ff_commit(f);
}

/* An RPC the host serves; in_host tells a fault recovery that the code
 * running below the caller is the host's, not a fused image's. */
static int ff_host_invoke(struct ff_frame *caller, const char *name, const char *input,
                          size_t len, const char **output, size_t *output_len)
{
    struct ff_worker *w = caller->w;
    size_t depth = ff_depth(caller);
    if (depth + 1 > FF_MAX_DEPTH || !w->host_invoke)
        return ff_fail(output, output_len);
    caller->in_host = 1;
    int rc = w->host_invoke_at
                 ? w->host_invoke_at(w->host_ctx, (uint32_t)depth, name, input, len, output,
                                     output_len)
                 : w->host_invoke(w->host_ctx, name, input, len, output, output_len);
    caller->in_host = 0;
    return rc;
}

struct ff_saved_fast_count {
    struct ff_worker *w;
    size_t fast_count;
};

/* Also while an exception unwinds. */
static void ff_restore_fast_count(struct ff_saved_fast_count *s)
{
    s->w->fast_count = s->fast_count;
}

/* A call that cannot run on the fast path: bad arguments, the wrong
 * thread, an image that is running already (an extra worker or the host),
 * or one that may be too deep. */
static __attribute__((noinline)) int ff_call_slow(struct ff_frame *caller, size_t k,
                                                  const char *input, size_t len,
                                                  const char **output, size_t *output_len)
{
    if (!caller || !output || !output_len)
        return -1;
    struct ff_worker *w = caller->w;
    const char *name = k < w->count ? w->table->images[k].name : "?";
    if (!ff_runs_here(caller)) {
        ff_refuse_thread(caller, "invoked ", name);
        return ff_fail(output, output_len);
    }
    if (k >= w->count || ff_depth(caller) + 1 > FF_MAX_DEPTH)
        return ff_fail(output, output_len);
    void *me = __builtin_thread_pointer();
    struct ff_frame *f = w->frames[k];
    if (!f->owner)
        return ff_run(caller, f, me, input, len, output, output_len, 0);
    if (f->suspect || !(w->table->images[k].flags & FF_IMAGE_REENTRANT)) {
        /* Busy and not re-entrant: the platform would send this call to
         * another process of the function, and so does the host. */
        return ff_host_invoke(caller, name, input, len, output, output_len);
    }
    /* The first idle extra worker, created on first use. */
    while (f->owner) {
        if (f->suspect)
            return ff_host_invoke(caller, name, input, len, output, output_len);
        if (!f->extra) {
            int rc;
            f->extra = ff_frame_new(w, k, &rc);
            if (!f->extra)
                return ff_fail(output, output_len);
        }
        f = f->extra;
    }
    /* An image now runs twice: depths are counted until this call ends. */
    struct ff_saved_fast_count saved __attribute__((cleanup(ff_restore_fast_count))) = {
        w, w->fast_count};
    w->fast_count = 0;
    return ff_run(caller, f, me, input, len, output, output_len, 0);
}

/* A dispatch with bad arguments or from the wrong thread. */
static __attribute__((noinline, cold)) int ff_dispatch_refused(struct ff_frame *caller,
                                                               const char *name,
                                                               const char **output,
                                                               size_t *output_len)
{
    if (!caller || !output || !output_len)
        return -1;
    if (name)
        ff_refuse_thread(caller, "invoked ", name);
    return ff_fail(output, output_len);
}

int faasfuse_rt_dispatch(void *ctx, const char *name, const char *input, size_t len,
                         const char **output, size_t *output_len)
{
    struct ff_frame *caller = ctx;
    void *me;
    if (__builtin_expect(!caller || !name || !output || !output_len ||
                             (me = __atomic_load_n(&caller->owner, __ATOMIC_ACQUIRE)) !=
                                 __builtin_thread_pointer(),
                         0))
        return ff_dispatch_refused(caller, name, output, output_len);
    struct ff_worker *w = caller->w;
    size_t k = ff_lookup(w, name);
    if (k == SIZE_MAX)
        return ff_host_invoke(caller, name, input, len, output, output_len);
    struct ff_frame *f = w->frames[k];
    if (__builtin_expect(k >= w->fast_count || __atomic_load_n(&f->owner, __ATOMIC_RELAXED), 0))
        return ff_call_slow(caller, k, input, len, output, output_len);
    return ff_run(caller, f, me, input, len, output, output_len, 1);
}

__attribute__((nocf_check)) int faasfuse_rt_call_image(void *ctx, size_t k, const char *input,
                                                       size_t len, const char **output,
                                                       size_t *output_len)
{
    struct ff_frame *caller = ctx;
    struct ff_worker *w;
    struct ff_frame *f;
    void *me;
    /* The caller runs on this thread (its owner, also the callee's owner
     * now); k < fast_count: k is in the table, and the depth needs no
     * count; the callee is idle. */
    if (__builtin_expect(!caller || !output || !output_len ||
                             (me = __atomic_load_n(&caller->owner, __ATOMIC_ACQUIRE)) !=
                                 __builtin_thread_pointer() ||
                             k >= (w = caller->w)->fast_count ||
                             __atomic_load_n(&(f = w->frames[k])->owner, __ATOMIC_RELAXED),
                         0))
        return ff_call_slow(caller, k, input, len, output, output_len);
    return ff_run(caller, f, me, input, len, output, output_len, 1);
}

int faas_init(void)
{
    ff_mpk_enter();
    const struct ff_table *t = ff_table();
    if (!t || ff_relro_failed)
        return -1;
    if (ff_mpk->failed) {
        fprintf(stderr,
                "faasfuse: a fused callee is isolated with mpk, but its protection keys could "
                "not be set (%s): refusing to serve it unprotected\n",
                strerror(ff_mpk->failed));
        return -1;
    }
    /* Callees first (reverse table order), then the root. */
    for (size_t i = t->count; i-- > 0;) {
        if (!t->images[i].init)
            return -1;
        int rc = t->images[i].init();
        if (rc != 0)
            return rc;
    }
    return 0;
}

static void ff_destroy_frames(struct ff_worker *w, size_t from)
{
    const struct ff_image *im = w->table->images;
    for (size_t k = from; k < w->count; k++) {
        struct ff_frame *f = w->frames[k];
        while (f) {
            struct ff_frame *next = f->extra;
            if (im[k].destroy && !f->suspect)
                im[k].destroy(f->stack ? f->image_handle : f->handle);
            ff_frame_free(f);
            f = next;
        }
        w->frames[k] = NULL;
    }
}

/* faasfuse's own host exports its invoke and two functions that carry the
 * nesting depth across the boundary (the platform's ABI has no depth): use
 * them when the invoke this worker got is that host's. */
static void ff_find_host(struct ff_worker *w, faas_invoke_fn invoke)
{
    void *host_invoke = dlsym(RTLD_DEFAULT, "faasfuse_host_invoke");
    void *depth = dlsym(RTLD_DEFAULT, "faasfuse_host_depth");
    void *invoke_at = dlsym(RTLD_DEFAULT, "faasfuse_host_invoke_at");
    if (!host_invoke || host_invoke != (void *)invoke || !depth || !invoke_at)
        return;
    w->host_depth = (uint32_t(*)(void *))depth;
    w->host_invoke_at = (int (*)(void *, uint32_t, const char *, const char *, size_t,
                                 const char **, size_t *))invoke_at;
}

/* One worker per fused image, created now, before any request, as each
 * function's process creates its one worker on the platform: callees first
 * (reverse table order), then the root's. */
int faas_create_func_worker(void *caller_ctx, faas_invoke_fn invoke, faas_append_fn append,
                            void **handle)
{
    ff_mpk_enter();
    const struct ff_table *t = ff_table();
    if (!t || !handle)
        return -1;
    struct ff_worker *w = ff_state_alloc(sizeof *w + (size_t)t->count * sizeof(struct ff_frame *));
    if (!w)
        return -1;
    w->host_ctx = caller_ctx;
    w->host_invoke = invoke;
    w->host_append = append;
    w->table = t;
    w->count = (size_t)t->count;
    w->fast_count = w->count <= FF_MAX_DEPTH ? w->count : 0;
    ff_find_host(w, invoke);
    for (size_t k = w->count; k-- > 0;) {
        int rc;
        w->frames[k] = ff_frame_new(w, k, &rc);
        if (!w->frames[k]) {
            ff_destroy_frames(w, k + 1);
            ff_state_free(w);
            return rc ? rc : -1;
        }
    }
    *handle = w;
    return 0;
}

int faas_func_call(void *handle, const char *input, size_t input_len)
{
    struct ff_worker *w = handle;
    if (!w)
        return -1;
    ff_mpk_enter();
    w->base_depth = w->host_depth ? w->host_depth(w->host_ctx) : 0;
    w->fast_count = w->count + w->base_depth <= FF_MAX_DEPTH ? w->count : 0;
    struct ff_frame *running __attribute__((cleanup(ff_end_root_call))) = w->frames[0];
    __atomic_store_n(&running->owner, __builtin_thread_pointer(), __ATOMIC_RELEASE);
    return running->call(running->handle, input, input_len);
}

/* The root's worker first, then the callees' in table order (the reverse
 * of creation). The platform never calls this; a host that does gets every
 * worker destroyed once. */
int faas_destroy_func_worker(void *handle)
{
    struct ff_worker *w = handle;
    if (!w)
        return -1;
    ff_mpk_enter();
    struct ff_frame *root = w->frames[0];
    int rc = w->table->images[0].destroy ? w->table->images[0].destroy(root->handle) : -1;
    /* Extra workers of a re-entrant root go with the callees'. */
    w->frames[0] = root->extra;
    ff_frame_free(root);
    ff_destroy_frames(w, 0);
    ff_state_free(w);
    return rc;
}
