/*
 * faasfuse_rt.c - the fusion runtime.
 *
 * `faasfuse merge` copies this image into every fused shared object. It
 * exports the four worker_v1 entry points in place of the root function's
 * and wraps them: the root's worker gets a runtime frame as caller_ctx and
 * the runtime's own invoke/append, so a nested call to any image in the fused
 * table (root included) runs in-process, on a worker created lazily per
 * (image, depth) exactly as the host would create it. A call to any other
 * name goes to the host's invoke unchanged.
 *
 * Semantics follow the host (src/host/library.rs): *output is cleared first;
 * a nesting depth above FF_MAX_DEPTH fails; a failing callee gives -1 and
 * its output is discarded; a nested output stays valid until the caller's
 * own call ends (it is owned by the caller's frame and freed then).
 *
 * No mutable global state except what the load-time constructor records:
 * different runtime workers may run on different threads at once.
 */
#define _DEFAULT_SOURCE 1

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "faasfuse_rt.h"

/* A growable output buffer, always NUL-terminated once allocated. */
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
#define FF_CHUNK_MIN 4000u

/* One worker of one image at one depth; its address is the caller_ctx that
 * image passes back to faasfuse_rt_dispatch/rt_append. Allocated once, never moved. */
struct ff_frame {
    struct ff_worker *w;
    size_t image;
    uint32_t depth;
    int append_failed; /* an append ran out of memory during this call */
    void *handle;
    struct ff_buf out; /* this call's output (unused by the root frame) */
    struct ff_chunk *kept; /* copies of the outputs of this call's nested calls */
};

/* What faas_create_func_worker returns: one root worker and its callees. */
struct ff_worker {
    void *host_ctx;
    faas_invoke_fn host_invoke;
    faas_append_fn host_append;
    const struct ff_table *table;
    size_t count;
    const char *cached_name; /* last name pointer found in the table ... */
    size_t cached_index;     /* ... and where (re-checked with strcmp) */
    struct ff_frame *frames[]; /* [depth * count + image], depth 0..FF_MAX_DEPTH */
};

/* Set by the constructor only: a callee's RELRO range could not be made
 * read-only (ld.so would have refused to load such an image). */
static int ff_relro_failed;

static const char ff_empty[1] = "";

static const struct ff_table *ff_table(void)
{
    const struct ff_table *t = &faasfuse_fused_table;
    if (t->magic != FF_TABLE_MAGIC || t->count == 0 ||
        t->count > SIZE_MAX / sizeof(struct ff_frame *) / (FF_MAX_DEPTH + 1) - 1)
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

static int ff_buf_append(struct ff_buf *b, const char *data, size_t len)
{
    if (len > SIZE_MAX - 1 - b->len)
        return -1;
    size_t need = b->len + len + 1;
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 128;
        while (cap < need)
            cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        char *p = realloc(b->data, cap);
        if (!p)
            return -1;
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

/* Copy a nested call's output into frame f's arena, where it stays valid
 * until f's own call ends. No allocation once the arena has grown. */
static const char *ff_keep(struct ff_frame *f, const char *data, size_t len)
{
    if (len > SIZE_MAX - 16)
        return NULL;
    size_t need = (len + 1 + 7) & ~(size_t)7;
    struct ff_chunk *c = f->kept;
    if (!c || c->cap - c->used < need) {
        size_t cap = need > FF_CHUNK_MIN ? need : FF_CHUNK_MIN;
        struct ff_chunk *n = malloc(sizeof *n + cap);
        if (!n)
            return NULL;
        n->next = c;
        n->cap = cap;
        n->used = 0;
        f->kept = c = n;
    }
    char *p = c->data + c->used;
    memcpy(p, data, len);
    p[len] = '\0';
    c->used += need;
    return p;
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
    free(f->out.data);
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

static void rt_append(void *ctx, const char *data, size_t len)
{
    struct ff_frame *f = ctx;
    if (!f || !data || len == 0)
        return;
    struct ff_worker *w = f->w;
    if (f->image == 0 && f->depth == 0) {
        if (w->host_append)
            w->host_append(w->host_ctx, data, len);
        return;
    }
    if (ff_buf_append(&f->out, data, len) != 0)
        f->append_failed = 1;
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

/* The worker of image k at `depth`, created on first use. */
static struct ff_frame *ff_frame_get(struct ff_worker *w, size_t k, uint32_t depth)
{
    struct ff_frame **slot = &w->frames[(size_t)depth * w->count + k];
    if (*slot)
        return *slot;
    const struct ff_image *im = &w->table->images[k];
    if (!im->create)
        return NULL;
    struct ff_frame *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->w = w;
    f->image = k;
    f->depth = depth;
    void *h = NULL;
    if (im->create(f, faasfuse_rt_dispatch, rt_append, &h) != 0) {
        free(f);
        return NULL;
    }
    f->handle = h;
    *slot = f;
    return f;
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
    size_t k = ff_lookup(w, name);
    if (k == SIZE_MAX) {
        if (caller->depth + 1 > FF_MAX_DEPTH)
            return -1;
        if (!w->host_invoke)
            return -1;
        return w->host_invoke(w->host_ctx, name, input, len, output, output_len);
    }
    return faasfuse_rt_call_image(ctx, k, input, len, output, output_len);
}

int faasfuse_rt_call_image(void *ctx, size_t k, const char *input, size_t len,
                           const char **output, size_t *output_len)
{
    struct ff_frame *caller = ctx;
    if (!caller || !output || !output_len)
        return -1;
    *output = NULL;
    *output_len = 0;
    uint32_t depth = caller->depth + 1;
    if (depth > FF_MAX_DEPTH)
        return -1;
    struct ff_worker *w = caller->w;
    if (k >= w->count)
        return -1;
    struct ff_frame *f = ff_frame_get(w, k, depth);
    if (!f)
        return -1;
    if (!input || len == 0) {
        input = ff_empty;
        len = 0;
    }
    f->out.len = 0;
    if (f->out.data)
        f->out.data[0] = '\0';
    f->append_failed = 0;
    int rc = w->table->images[k].call(f->handle, input, len);
    ff_free_kept(f); /* the callee's own nested outputs end with its call */
    if (rc != 0 || f->append_failed)
        return -1;
    if (f->out.len == 0) {
        *output = ff_empty;
        return 0;
    }
    const char *kept = ff_keep(caller, f->out.data, f->out.len);
    if (!kept)
        return -1;
    *output = kept;
    *output_len = f->out.len;
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

int faas_create_func_worker(void *caller_ctx, faas_invoke_fn invoke, faas_append_fn append,
                            void **handle)
{
    const struct ff_table *t = ff_table();
    if (!t || !handle || !t->images[0].create)
        return -1;
    size_t slots = (size_t)t->count * (FF_MAX_DEPTH + 1);
    struct ff_worker *w = calloc(1, sizeof *w + slots * sizeof(struct ff_frame *));
    struct ff_frame *root = calloc(1, sizeof *root);
    if (!w || !root) {
        free(w);
        free(root);
        return -1;
    }
    w->host_ctx = caller_ctx;
    w->host_invoke = invoke;
    w->host_append = append;
    w->table = t;
    w->count = (size_t)t->count;
    root->w = w;
    void *h = NULL;
    int rc = t->images[0].create(root, faasfuse_rt_dispatch, rt_append, &h);
    if (rc != 0) {
        free(root);
        free(w);
        return rc;
    }
    root->handle = h;
    w->frames[0] = root;
    *handle = w;
    return 0;
}

int faas_func_call(void *handle, const char *input, size_t input_len)
{
    struct ff_worker *w = handle;
    if (!w)
        return -1;
    struct ff_frame *root = w->frames[0];
    int rc = w->table->images[0].call(root->handle, input, input_len);
    ff_free_kept(root);
    return rc;
}

int faas_destroy_func_worker(void *handle)
{
    struct ff_worker *w = handle;
    if (!w)
        return -1;
    const struct ff_image *im = w->table->images;
    /* Deepest first; within a depth, the higher image index first. */
    for (uint32_t d = FF_MAX_DEPTH; d >= 1; d--) {
        for (size_t k = w->count; k-- > 0;) {
            struct ff_frame *f = w->frames[(size_t)d * w->count + k];
            if (!f)
                continue;
            if (im[k].destroy)
                im[k].destroy(f->handle);
            ff_frame_free(f);
        }
    }
    struct ff_frame *root = w->frames[0];
    int rc = im[0].destroy ? im[0].destroy(root->handle) : -1;
    ff_frame_free(root);
    free(w);
    return rc;
}
