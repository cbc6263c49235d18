/*
 * faasfuse_rt.h - the fused table: what `faasfuse merge` tells the fusion
 * runtime about the images it fused.
 *
 * The merger defines `faasfuse_fused_table` in the fused shared object; the
 * runtime only references it (an undefined, default-visibility symbol, so
 * the runtime image carries a dynamic relocation against it that the merger
 * resolves). images[0] is the root function, images[1..count) the fused
 * callees. Every pointer and address in the table is a run-time address
 * (the merger emits R_X86_64_RELATIVE relocations for them).
 *
 * This header is the layout's one source: build.rs has the C compiler print
 * its sizes, offsets and flags for the merger (src/lib.rs of this crate).
 */
#ifndef FAASFUSE_RT_H
#define FAASFUSE_RT_H

#include <stddef.h>
#include <stdint.h>

#include "faas_worker.h"

/* "FFTABLE1" read as a little-endian 64-bit integer. */
#define FF_TABLE_MAGIC UINT64_C(0x31454c4241544646)

/* Deepest nesting served, as the host does (crates/host/src/library.rs MAX_DEPTH). */
#define FF_MAX_DEPTH 64

/* ff_image.flags: the function tolerates re-entry in one process, so a
 * call into it while it is already running is served in-process by an extra
 * worker instead of going to the host. */
#define FF_IMAGE_REENTRANT UINT64_C(1)

/* ff_image.flags: every call of the function runs on a stack of its
 * worker's own, and a fault in it fails that call (faasfuse_stack.h). */
#define FF_IMAGE_ISOLATE_STACK UINT64_C(2)

/* ff_image.flags, with FF_IMAGE_ISOLATE_STACK: the image's writable
 * segments, its stacks and the buffers its input and output cross through
 * carry a protection key of its own, and the runtime switches PKRU on call
 * and return so that, while it runs, every other key the runtime gave out
 * is denied (faasfuse_mpk.h). */
#define FF_IMAGE_ISOLATE_MPK UINT64_C(4)

/* One fused image: its name and its own worker_v1 entry points. 80 bytes. */
struct ff_image {
    const char *name;  /* function name, NUL-terminated */
    int (*init)(void); /* the image's own faas_init */
    int (*create)(void *caller_ctx, faas_invoke_fn invoke, faas_append_fn append,
                  void **handle);
    int (*destroy)(void *handle);
    int (*call)(void *handle, const char *input, size_t len);
    /* [relro_start, relro_end): made read-only by the runtime after load
     * (callees only; the root's PT_GNU_RELRO is handled by ld.so); 0,0 = none */
    uintptr_t relro_start;
    uintptr_t relro_end;
    /* [span_start, span_end): where the image's segments lie. */
    uintptr_t span_start;
    uintptr_t span_end;
    uint64_t flags; /* FF_IMAGE_* */
};

struct ff_table {
    uint64_t magic;  /* FF_TABLE_MAGIC */
    uint64_t count;  /* number of images; images[0] is the root */
    struct ff_image images[];
};

/* Defined by the merger in the fused image. */
extern const struct ff_table faasfuse_fused_table __attribute__((visibility("default")));

#endif /* FAASFUSE_RT_H */
