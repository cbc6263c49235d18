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
 * - the root's worker serves one call at a time on the thread that called
 *   faas_func_call; a nested call from any other thread (or outside a call)
 *   fails with -1 and one line on stderr, never touching shared state
 *   (nightcore's worker aborts the process in that case).
 *
 * Semantics follow the platform: *output is cleared first; a failing callee
 * gives -1 and its output is discarded; a nested output stays valid until
 * the caller's own call ends (it is owned by the caller's frame and freed
 * then); a nesting depth above FF_MAX_DEPTH fails.
 */
#define _DEFAULT_SOURCE 1

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "faasfuse_rt.h"
#include "faasfuse_stack.h"

/* A reused buffer holding a NUL-terminated copy (a fused call's input). */
struct ff_buf {
    char *data;
    size_t len;
    size_t cap;
};

struct ff_worker;

/* Arena chunk holding nested outputs; the newest chunk is the list head. */
struct ff_chunk {
    struct ff_chunk *next;
    size_t cap;
    size_t used;
    char data[];
};

/* Chunks up to this size are kept for reuse when a call ends. */
#define FF_CHUNK_REUSE (1u << 20)
#define FF_CHUNK_MIN 4000u /* a multiple of 8 */

/* One worker of one image; its address is the caller_ctx that image passes
 * back to faasfuse_rt_dispatch/rt_append. Allocated once, never moved. */
struct ff_frame {
    struct ff_worker *w;
    size_t image;
    uint32_t depth;    /* nesting depth of the call it runs (0: the root's) */
    int active;        /* running a call now */
    int append_failed; /* an append ran out of memory during this call */
    void *handle;
    struct ff_frame *extra; /* next worker of a re-entrant image, or NULL */
    struct ff_buf in;       /* private NUL-terminated copy of this call's input */
    /* This call's output, built in place at the tail of the caller's arena
     * (the caller is blocked meanwhile, so nothing else writes there) and
     * committed when the call succeeds: one copy per appended byte. */
    struct ff_frame *caller;
    size_t out_len;
    struct ff_chunk *kept; /* outputs of this call's own nested calls */
    struct ff_stack *stack; /* its own stack (FF_IMAGE_ISOLATE_STACK), or NULL */
    int suspect;            /* it faulted: its state is not to be trusted */
};

/* What faas_create_func_worker returns: one worker per fused image. */
struct ff_worker {
    void *host_ctx;
    faas_invoke_fn host_invoke;
    faas_append_fn host_append;
    const struct ff_table *table;
    size_t count;
    const char *cached_name; /* last name pointer found in the table ... */
    size_t cached_index;     /* ... and where (re-checked with strcmp) */
    void *owner;             /* thread running the root's current call ... */
    int running;             /* ... while this is set (atomic access) */
    void *stack_thread;      /* thread made ready for isolated stacks */
    struct ff_frame *frames[]; /* [image]: its one worker */
};

/* Set by the constructor only: a callee's RELRO range could not be made
 * read-only (ld.so would have refused to load such an image). */
static int ff_relro_failed;

static const char ff_empty[1] = "";

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
    long ps = sysconf(_SC_PAGESIZE);
    uintptr_t mask = ~((uintptr_t)(ps > 0 ? ps : 4096) - 1);
    for (size_t i = 1; i < t->count; i++) {
        uintptr_t s = t->images[i].relro_start & mask;
        uintptr_t e = t->images[i].relro_end & mask;
        if (e > s && mprotect((void *)s, e - s, PROT_READ) != 0)
            ff_relro_failed = 1;
    }
}

/* memcpy for the short copies of the fused-call path (names, small
 * inputs and outputs) without a library call; memcpy beyond 16 bytes. */
static inline void ff_copy(char *dst, const char *src, size_t n)
{
    if (n > 16) {
        memcpy(dst, src, n);
    } else if (n >= 8) {
        uint64_t a, b;
        __builtin_memcpy(&a, src, 8);
        __builtin_memcpy(&b, src + n - 8, 8);
        __builtin_memcpy(dst, &a, 8);
        __builtin_memcpy(dst + n - 8, &b, 8);
    } else if (n >= 4) {
        uint32_t a, b;
        __builtin_memcpy(&a, src, 4);
        __builtin_memcpy(&b, src + n - 4, 4);
        __builtin_memcpy(dst, &a, 4);
        __builtin_memcpy(dst + n - 4, &b, 4);
    } else {
        for (size_t i = 0; i < n; i++)
            dst[i] = src[i];
    }
}

/* b := data[0, len) followed by a NUL; the buffer is reused. */
static int ff_buf_set(struct ff_buf *b, const char *data, size_t len)
{
    if (__builtin_expect(len >= b->cap, 0)) {
        if (len > SIZE_MAX / 2)
            return -1;
        size_t cap = len < 64 ? 128 : 2 * len;
        char *p = malloc(cap);
        if (!p)
            return -1;
        if (len)
            memcpy(p, data, len);
        free(b->data);
        b->data = p;
        b->cap = cap;
    } else {
        ff_copy(b->data, data, len);
    }
    b->data[len] = '\0';
    b->len = len;
    return 0;
}

/* Room for `need` bytes at the tail of f's arena, where the output being
 * built (its first `keep` bytes written) moves along if a new chunk is
 * needed; earlier outputs stay where they are. NULL when out of memory. */
static char *ff_tail(struct ff_frame *f, size_t keep, size_t need)
{
    struct ff_chunk *c = f->kept;
    if (__builtin_expect(c && c->cap - c->used >= need, 1))
        return c->data + c->used;
    if (need > SIZE_MAX / 2 - sizeof *c)
        return NULL;
    /* Multiples of 8, as every commit advances `used` by one. */
    size_t cap = need > FF_CHUNK_MIN / 2 ? (2 * need + 7) & ~(size_t)7 : FF_CHUNK_MIN;
    struct ff_chunk *n = malloc(sizeof *n + cap);
    if (!n)
        return NULL;
    n->next = c;
    n->cap = cap;
    n->used = 0;
    if (keep)
        memcpy(n->data, c->data + c->used, keep);
    f->kept = n;
    return n->data;
}

/* End of f's call: its nested outputs expire; keep one chunk for reuse. */
static void ff_free_kept(struct ff_frame *f)
{
    struct ff_chunk *c = f->kept;
    if (!c)
        return;
    struct ff_chunk *rest = c->next;
    if (c->cap > FF_CHUNK_REUSE) {
        rest = c;
        f->kept = NULL;
    } else {
        c->next = NULL;
        c->used = 0;
    }
    while (rest) {
        struct ff_chunk *n = rest->next;
        free(rest);
        rest = n;
    }
}

static void ff_frame_free(struct ff_frame *f)
{
    ff_free_kept(f);
    free(f->kept);
    free(f->in.data);
    free(f);
}

/* The invoke_fn every fused image's workers get (tier 0: name lookup per
 * call), and what lowered RPC sites call directly: the dispatcher (tier 1)
 * and, through a per-callee entry stub that passes the callee's table index
 * in place of its name, the callee itself (tier 2). `faasfuse merge` finds
 * both by name in this image's symbol table. */
int faasfuse_rt_dispatch(void *ctx, const char *name, const char *input, size_t len,
                         const char **output, size_t *output_len);
int faasfuse_rt_call_image(void *ctx, size_t k, const char *input, size_t len,
                           const char **output, size_t *output_len);

/* Is this thread the one running the root's current call? Anything else
 * must not touch the worker's frames. */
static inline int ff_on_owner_thread(const struct ff_worker *w)
{
    /* The thread pointer identifies the thread (glibc: pthread_self()) and
     * costs one load. */
    return __atomic_load_n(&w->running, __ATOMIC_ACQUIRE) &&
           w->owner == __builtin_thread_pointer();
}

static void ff_refuse_thread(const struct ff_frame *f, const char *what, const char *callee)
{
    const struct ff_image *im = &f->w->table->images[f->image];
    fprintf(stderr,
            "faasfuse: %s %s%s from a second thread or outside a call: refused "
            "(one call at a time per process, on the thread that runs it)\n",
            im->name ? im->name : "?", what, callee ? callee : "");
}

static void rt_append(void *ctx, const char *data, size_t len)
{
    struct ff_frame *f = ctx;
    if (!f || !data || len == 0)
        return;
    struct ff_worker *w = f->w;
    if (!ff_on_owner_thread(w)) {
        ff_refuse_thread(f, "appended output", NULL);
        return;
    }
    if (f->image == 0 && f->depth == 0) {
        if (w->host_append)
            w->host_append(w->host_ctx, data, len);
        return;
    }
    if (f->append_failed || len > SIZE_MAX / 4) {
        f->append_failed = 1;
        return;
    }
    char *at = ff_tail(f->caller, f->out_len, f->out_len + len + 1);
    if (!at) {
        f->append_failed = 1;
        return;
    }
    ff_copy(at + f->out_len, data, len);
    f->out_len += len;
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

/* Create a worker of image k. */
static struct ff_frame *ff_frame_new(struct ff_worker *w, size_t k, int *rc)
{
    const struct ff_image *im = &w->table->images[k];
    *rc = -1;
    if (!im->create)
        return NULL;
    struct ff_frame *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->w = w;
    f->image = k;
    if (im->flags & FF_IMAGE_ISOLATE_STACK) {
        f->stack = ff_stack_new();
        if (!f->stack) {
            free(f);
            return NULL;
        }
    }
    void *h = NULL;
    *rc = im->create(f, faasfuse_rt_dispatch, rt_append, &h);
    if (*rc != 0) {
        free(f);
        return NULL;
    }
    f->handle = h;
    return f;
}

/* The worker that serves a call into image k now: its one worker when idle;
 * for a re-entrant image, the first idle extra worker (created on first
 * use); NULL when the image is busy and not re-entrant. */
static struct ff_frame *ff_idle_worker(struct ff_worker *w, size_t k, int *failed)
{
    struct ff_frame *f = w->frames[k];
    *failed = 0;
    if (!f->active)
        return f;
    /* A worker that faulted stays busy for good: the host serves the
     * function from then on, re-entrant or not. */
    if (f->suspect || !(w->table->images[k].flags & FF_IMAGE_REENTRANT))
        return NULL;
    while (f->active) {
        if (!f->extra) {
            int rc;
            f->extra = ff_frame_new(w, k, &rc);
            if (!f->extra) {
                *failed = 1;
                return NULL;
            }
        }
        f = f->extra;
    }
    return f;
}

/* End of a worker's call, on return or while an exception unwinds: it is
 * idle again, and its own nested outputs expire. */
static void ff_end_call(struct ff_frame **running)
{
    struct ff_frame *f = *running;
    /* An atomic store: gcc drops a plain one on the unwinding path as dead
     * before the noreturn _Unwind_Resume. */
    __atomic_store_n(&f->active, 0, __ATOMIC_RELAXED);
    ff_free_kept(f);
}

/* End of the root's call: no call runs in this process any more. */
static void ff_end_root_call(struct ff_worker **running)
{
    struct ff_worker *w = *running;
    ff_end_call(&w->frames[0]);
    __atomic_store_n(&w->running, 0, __ATOMIC_RELEASE);
}

static int ff_host_invoke(struct ff_frame *caller, const char *name, const char *input,
                          size_t len, const char **output, size_t *output_len)
{
    struct ff_worker *w = caller->w;
    if (caller->depth + 1 > FF_MAX_DEPTH || !w->host_invoke)
        return -1;
    return w->host_invoke(w->host_ctx, name, input, len, output, output_len);
}

int faasfuse_rt_dispatch(void *ctx, const char *name, const char *input, size_t len,
                         const char **output, size_t *output_len)
{
    struct ff_frame *caller = ctx;
    if (!caller || !output || !output_len)
        return -1;
    *output = NULL;
    *output_len = 0;
    if (!name)
        return -1;
    struct ff_worker *w = caller->w;
    if (!ff_on_owner_thread(w)) {
        ff_refuse_thread(caller, "invoked ", name);
        return -1;
    }
    size_t k = ff_lookup(w, name);
    if (k == SIZE_MAX)
        return ff_host_invoke(caller, name, input, len, output, output_len);
    return faasfuse_rt_call_image(ctx, k, input, len, output, output_len);
}

/* f's call on its own stack. */
static int ff_call_isolated(struct ff_worker *w, struct ff_frame *f, size_t k)
{
    void *self = __builtin_thread_pointer();
    if (w->stack_thread != self) {
        ff_stack_thread_ready();
        w->stack_thread = self;
    }
    return ff_stack_call(f->stack, w->table->images[k].call, f->handle, f->in.data, f->in.len);
}

/* f's call faulted and was cut short: it fails, the calls it had made
 * were abandoned mid-way (their workers are idle again, their outputs
 * gone), and f's image is served by the host from now on. */
__attribute__((cold, noinline)) static int ff_after_fault(struct ff_worker *w,
                                                          struct ff_frame *f, size_t k)
{
    const struct ff_image *im = w->table->images;
    fprintf(stderr,
            "faasfuse: %s faulted (signal %d at %#lx) on its isolated stack: the call fails "
            "with -1 and the host serves %s from now on\n",
            im[k].name ? im[k].name : "?", f->stack->fault_sig,
            (unsigned long)f->stack->fault_addr, im[k].name ? im[k].name : "?");
    f->stack->faulted = 0;
    for (size_t i = 0; i < w->count; i++)
        for (struct ff_frame *g = w->frames[i]; g; g = g->extra)
            if (g->active && g->depth > f->depth)
                ff_end_call(&g);
    f->suspect = 1;
    f->active = 1;
    if (w->frames[k] != f) {
        w->frames[k]->suspect = 1;
        w->frames[k]->active = 1;
    }
    return -1;
}

int faasfuse_rt_call_image(void *ctx, size_t k, const char *input, size_t len,
                           const char **output, size_t *output_len)
{
    struct ff_frame *caller = ctx;
    if (!caller || !output || !output_len)
        return -1;
    *output = NULL;
    *output_len = 0;
    struct ff_worker *w = caller->w;
    if (k >= w->count)
        return -1;
    if (!ff_on_owner_thread(w)) {
        ff_refuse_thread(caller, "invoked ", w->table->images[k].name);
        return -1;
    }
    uint32_t depth = caller->depth + 1;
    if (depth > FF_MAX_DEPTH)
        return -1;
    int failed;
    struct ff_frame *f = ff_idle_worker(w, k, &failed);
    if (!f) {
        if (failed)
            return -1;
        /* Busy and not re-entrant: the platform would send this call to
         * another process of the function, and so does the host. */
        return ff_host_invoke(caller, w->table->images[k].name, input, len, output,
                              output_len);
    }
    /* A private NUL-terminated copy, as a worker process receives it. */
    if (!input)
        len = 0;
    if (ff_buf_set(&f->in, input, len) != 0)
        return -1;
    f->caller = caller;
    f->out_len = 0;
    f->append_failed = 0;
    f->depth = depth;
    int rc;
    {
        /* An exception thrown by the callee unwinds through here into its
         * caller (-fexceptions): the cleanup still ends the call. */
        struct ff_frame *running __attribute__((cleanup(ff_end_call))) = f;
        f->active = 1;
        if (__builtin_expect(f->stack != NULL, 0))
            rc = ff_call_isolated(w, f, k);
        else
            rc = w->table->images[k].call(f->handle, f->in.data, f->in.len);
    }
    if (__builtin_expect(f->stack && f->stack->faulted, 0))
        return ff_after_fault(w, f, k);
    if (rc != 0 || f->append_failed)
        return -1; /* nothing committed: the output is discarded */
    if (f->out_len == 0) {
        *output = ff_empty;
        return 0;
    }
    /* Commit the output built at the tail of the caller's arena. */
    struct ff_chunk *c = caller->kept;
    char *out = c->data + c->used;
    out[f->out_len] = '\0';
    c->used += (f->out_len + 1 + 7) & ~(size_t)7;
    *output = out;
    *output_len = f->out_len;
    return 0;
}

int faas_init(void)
{
    const struct ff_table *t = ff_table();
    if (!t || ff_relro_failed)
        return -1;
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
                im[k].destroy(f->handle);
            ff_frame_free(f);
            f = next;
        }
        w->frames[k] = NULL;
    }
}

/* One worker per fused image, created now, before any request, as each
 * function's process creates its one worker on the platform: callees first
 * (reverse table order), then the root's. */
int faas_create_func_worker(void *caller_ctx, faas_invoke_fn invoke, faas_append_fn append,
                            void **handle)
{
    const struct ff_table *t = ff_table();
    if (!t || !handle)
        return -1;
    struct ff_worker *w = calloc(1, sizeof *w + (size_t)t->count * sizeof(struct ff_frame *));
    if (!w)
        return -1;
    w->host_ctx = caller_ctx;
    w->host_invoke = invoke;
    w->host_append = append;
    w->table = t;
    w->count = (size_t)t->count;
    for (size_t k = w->count; k-- > 0;) {
        int rc;
        w->frames[k] = ff_frame_new(w, k, &rc);
        if (!w->frames[k]) {
            ff_destroy_frames(w, k + 1);
            free(w);
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
    struct ff_frame *root = w->frames[0];
    struct ff_worker *running __attribute__((cleanup(ff_end_root_call))) = w;
    w->owner = __builtin_thread_pointer();
    __atomic_store_n(&w->running, 1, __ATOMIC_RELEASE);
    root->active = 1;
    return w->table->images[0].call(root->handle, input, input_len);
}

/* The root's worker first, then the callees' in table order (the reverse
 * of creation). The platform never calls this; a host that does gets every
 * worker destroyed once. */
int faas_destroy_func_worker(void *handle)
{
    struct ff_worker *w = handle;
    if (!w)
        return -1;
    struct ff_frame *root = w->frames[0];
    int rc = w->table->images[0].destroy ? w->table->images[0].destroy(root->handle) : -1;
    /* Extra workers of a re-entrant root go with the callees'. */
    w->frames[0] = root->extra;
    ff_frame_free(root);
    ff_destroy_frames(w, 0);
    free(w);
    return rc;
}
