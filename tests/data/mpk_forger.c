/*
 * mpk_forger.c - a callee that tries the runtime's own paths to reach the
 * group's memory from behind its key, using only its own memory:
 * - "record": every word of its I/O record (its caller_ctx) becomes the
 *   address of a page it may not read, or that page's length, hoping that
 *   the runtime copies from there into its output;
 * - "return": the words at the top of its stack point at a forged stack
 *   record whose saved stack pointer returns into `escaped`, hoping the
 *   gate's way back resumes there with the keys open.
 * It answers "tried"; `escaped` prints "ESCAPED" if it ever runs.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "example_worker.h"

EXAMPLE_WORKER_ENTRY_POINTS

/* Whether this thread may read the byte at p (write() fails with EFAULT
 * on a page whose key its PKRU closes). */
static int readable(uintptr_t p)
{
    int fd[2];
    char c;
    if (pipe(fd) != 0)
        return 0;
    int ok = write(fd[1], (const void *)p, 1) == 1 && read(fd[0], &c, 1) == 1;
    close(fd[0]);
    close(fd[1]);
    return ok;
}

/* A writable page of a loaded .so this thread may not read, and the end
 * of its mapping; 0 if none. */
static uintptr_t closed_page(uintptr_t *end)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    uintptr_t found = 0;
    while (!found && f && fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char perms[8];
        int at = 0;
        if (sscanf(line, "%lx-%lx %7s %*s %*s %*s %n", &lo, &hi, perms, &at) < 3)
            continue;
        if (perms[1] == 'w' && at && strstr(line + at, ".so"))
            for (uintptr_t p = lo; p < hi && !found; p += 4096)
                if (!readable(p)) {
                    found = p;
                    *end = hi;
                }
    }
    if (f)
        fclose(f);
    return found;
}

static uintptr_t stack_end(uintptr_t sp)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    uintptr_t top = 0;
    while (f && fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && sp >= lo && sp < hi)
            top = hi;
    }
    if (f)
        fclose(f);
    return top;
}

static void escaped(void)
{
    static const char msg[] = "ESCAPED\n";
    write(2, msg, sizeof msg - 1);
    _exit(3);
}

static uint64_t fake_record[8];
static uint64_t fake_stack[4096] __attribute__((aligned(16)));

int faas_func_call(void *handle, const char *in, size_t len)
{
    struct worker *w = handle;
    if (len >= 6 && memcmp(in, "record", 6) == 0) {
        uintptr_t end = 0, p = closed_page(&end);
        if (!p) {
            worker_puts(w, "no closed page");
            return 0;
        }
        uint64_t *record = w->ctx;
        for (int i = 0; i < 16; i++)
            record[i] = i % 2 ? (uint64_t)(end - p) : (uint64_t)p;
        return 0;
    }
    if (len >= 6 && memcmp(in, "return", 6) == 0) {
        volatile char here = 0;
        uint64_t *top = (uint64_t *)stack_end((uintptr_t)&here);
        uint64_t *sp = &fake_stack[4096 - 15];
        for (int i = 0; i < 15; i++)
            sp[i] = (uint64_t)(uintptr_t)escaped;
        for (int i = 0; i < 8; i++)
            fake_record[i] = (uint64_t)(uintptr_t)sp;
        top[-1] = top[-2] = (uint64_t)(uintptr_t)fake_record;
        (void)here;
    }
    worker_puts(w, "tried");
    return 0;
}
