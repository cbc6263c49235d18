/*
 * faasfuse_mpk.h - protection keys for fused callees isolated with
 * `merge --isolate mpk` (FF_IMAGE_ISOLATE_MPK).
 *
 * Keys: one per mpk callee (its writable segments, its stacks, its I/O
 * buffers) and one for the rest of the group (the root's and the other
 * callees' writable segments, the runtime's workers, arenas and stack
 * records). While an mpk callee runs, the thread's PKRU opens key 0 and its
 * own key only. Everything that switches PKRU lies in functions named
 * ff_pkru_gate_* (the only vetted WRPKRU sites of a fused image):
 * - ff_pkru_gate_call: into the callee on its own stack (one WRPKRU) and
 *   back (one WRPKRU); the way back opens the keys whatever the callee did,
 *   checks the value it wrote, and resumes from the stack record, never
 *   from a register the callee held;
 * - ff_pkru_gate_nested: a nested call made by the callee, out to the
 *   runtime and back in;
 * - ff_pkru_gate_enable: the runtime's entry points and fault handler
 *   (the host's threads and signal handlers start with the keys closed);
 * - ff_pkru_gate_recover: where a faulted call resumes.
 * The callee's worker gets an I/O record in its own key as caller_ctx and
 * ff_mpk_invoke/ff_mpk_append as invoke/append: its input is copied there,
 * its appends land there, a nested call's name and input are copied there
 * before the runtime reads them and its output after, so the runtime never
 * reads or writes memory on the callee's say-so.
 *
 * What stays shared: key 0 (libc's heap and state, the thread's own stack
 * and TLS, system libraries) and system calls. The runtime's own writable
 * segment (its globals, its GOT) is behind the group key but for the
 * settings page.
 */
#ifndef FAASFUSE_MPK_H
#define FAASFUSE_MPK_H

#include <stddef.h>
#include <stdint.h>

#include "faasfuse_rt.h"
#include "faasfuse_stack.h"

struct ff_mpk_links;

/* Settings fixed by the constructor, on a read-only page of their own so
 * that any thread may read them whatever its PKRU. */
struct ff_mpk_cfg {
    uint32_t ours;   /* PKRU's AD and WD bits of every key the runtime holds
                        (first: the gates read it) */
    int active;      /* some image is isolated with mpk and keys are set */
    int failed;      /* ... but keys could not be set: errno */
    int group_key;   /* the rest of the group */
    size_t nkeys;    /* mpk images */
    size_t image[15];
    int key[15];
    struct ff_mpk_links *links; /* which frame each I/O record is (group key) */
};
union ff_mpk_page {
    struct ff_mpk_cfg cfg;
    char page[4096];
};
/* Read directly (hidden: no GOT, which is behind the group key). */
extern union ff_mpk_page ff_mpk_page __attribute__((visibility("hidden")));
#define ff_mpk ((const struct ff_mpk_cfg *)&ff_mpk_page.cfg)

/* The constructor's part: allocate the keys and give every writable
 * segment of the fused object its image's key. */
void ff_mpk_setup(const struct ff_table *t);

/* An entry point from the host: open the runtime's keys on this thread. */
void ff_mpk_enter(void);
void ff_pkru_gate_enable(void) __attribute__((visibility("hidden")));

/* The runtime's own state: zeroed memory behind the group key when mpk is
 * active, else the heap's. */
void *ff_state_alloc(size_t n);
void ff_state_free(void *p);

/* Key of image k (the group key unless it is isolated with mpk). */
int ff_mpk_key_of(size_t k);

/* An mpk callee's worker: its I/O record and PKRU bits, its stack keyed. */
struct ff_mpk_io;
struct ff_mpk_worker {
    struct ff_mpk_io *io;
    uint32_t deny; /* PKRU bits closing every key but 0 and its own */
    int key;
};
/* `frame` is the worker's runtime frame: nested calls from the callee are
 * dispatched for it. */
int ff_mpk_worker_new(struct ff_mpk_worker *m, struct ff_stack *s, size_t image, void *frame);
void ff_mpk_worker_free(struct ff_mpk_worker *m);

/* Stack s's usable part (not its guard region) behind `key`. */
int ff_mpk_key_stack(struct ff_stack *s, int key);

/* Where a faulted call on an mpk stack resumes (ff_stack.resume). */
extern char ff_pkru_gate_recover[] __attribute__((visibility("hidden")));

/* The image's create, on stack s behind its key: caller_ctx is its I/O
 * record, invoke/append the gates. */
int ff_mpk_create(struct ff_mpk_worker *m, struct ff_stack *s,
                  int (*create)(void *, faas_invoke_fn, faas_append_fn, void **), void **handle);

/* One call on stack s behind its key: the input is copied in; *out and
 * *out_len give what it appended (valid until its next call), or NULL
 * when an append did not fit. */
int ff_mpk_call(struct ff_mpk_worker *m, struct ff_stack *s,
                int (*fn)(void *, const char *, size_t), void *handle, const char *input,
                size_t len, const char **out, size_t *out_len);

#endif /* FAASFUSE_MPK_H */
