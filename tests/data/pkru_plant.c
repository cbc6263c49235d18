/*
 * pkru_plant.c - a function whose code holds a byte sequence that writes
 * PKRU, chosen at build time, in a function it runs on every call (the
 * sequence itself never executes):
 *   -DPLANT_WRPKRU   0F 01 EF inside a `mov` immediate
 *   -DPLANT_XRSTOR   an `xrstor64` instruction on a path never taken
 *   -DPLANT_XRSTORS  0F C7 1F (XRSTORS [rdi]) inside a `mov` immediate
 *   -DPLANT_SPAN     0F 01 | EF: a `mov` ending in 0F 01, then `out`
 *                    (EF), jumped over
 * With -DCALLS, it is a root that calls Crasher with its input; else a
 * callee that answers "ok:" and the input.
 */
#include <stdint.h>

#include "example_worker.h"

EXAMPLE_WORKER_ENTRY_POINTS

__attribute__((noinline)) uint32_t planted(uint32_t x, void *area)
{
    uint32_t r = x;
#if defined(PLANT_WRPKRU)
    __asm__ volatile("movl $0x00ef010f, %0" : "=r"(r));
    (void)area;
#elif defined(PLANT_XRSTORS)
    __asm__ volatile("movl $0x001fc70f, %0" : "=r"(r));
    (void)area;
#elif defined(PLANT_XRSTOR)
    if (x == 0xfeedf00du)
        __asm__ volatile("xrstor64 (%0)" : : "r"(area), "a"(0), "d"(0) : "memory");
#elif defined(PLANT_SPAN)
    __asm__ volatile("jmp 1f\n\tmovw $0x010f, %%ax\n\t.byte 0xef\n1:" : : : "eax");
    (void)area;
#else
#error "choose a plant"
#endif
    return r ^ x;
}

int faas_func_call(void *handle, const char *in, size_t len)
{
    struct worker *w = handle;
    char area[64];
    if (planted((uint32_t)len, area) == 0x12345678u)
        worker_puts(w, "!");
#ifdef CALLS
    const char *out;
    size_t out_len;
    /* rpc-site: callee=Crasher fn=faas_func_call */
    int rc = w->invoke(w->ctx, "Crasher", in, len, &out, &out_len);
    if (rc == 0)
        w->append(w->ctx, out, out_len);
    return rc;
#else
    worker_puts(w, "ok:");
    w->append(w->ctx, in, len);
    return 0;
#endif
}
