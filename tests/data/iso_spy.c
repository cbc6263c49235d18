/*
 * iso_spy.c - a callee that looks for its callers' secrets: up its own
 * stack (from its frame to the end of the mapping the frame lies in) and
 * through the writable mappings of every loaded .so. Deployed alone it
 * finds nothing; fused without isolation it finds both.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "example_worker.h"

EXAMPLE_WORKER_ENTRY_POINTS

static const char needle[] = "FFSECRET:";

/* Whether [lo, hi) holds the needle. The bytes are read through a pipe,
 * page by page: a page this thread may not read (a protection key closed
 * by its PKRU) makes write() fail with EFAULT instead of faulting, and
 * counts as not found. */
static int contains(uintptr_t lo, uintptr_t hi)
{
    size_t n = sizeof needle - 1;
    int fd[2];
    if (pipe(fd) != 0)
        return -1;
    static char buf[4096 + sizeof needle];
    size_t carry = 0;
    int found = 0;
    for (uintptr_t p = lo; p < hi && !found;) {
        size_t chunk = 4096 - (p & 4095);
        if (chunk > hi - p)
            chunk = hi - p;
        if (write(fd[1], (const void *)p, chunk) != (ssize_t)chunk ||
            read(fd[0], buf + carry, chunk) != (ssize_t)chunk) {
            carry = 0;
            p += chunk;
            continue;
        }
        size_t have = carry + chunk;
        for (size_t i = 0; i + n <= have && !found; i++)
            found = memcmp(buf + i, needle, n) == 0;
        carry = have < n - 1 ? have : n - 1;
        memmove(buf, buf + have - carry, carry);
        p += chunk;
    }
    close(fd[0]);
    close(fd[1]);
    return found;
}

/* Scan what /proc/self/maps lists: the mapping holding `frame` from
 * `frame` up (stack), or every writable mapping of a .so (data). */
static int scan(uintptr_t frame, int stack)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return -1;
    char line[512];
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char perms[8] = "";
        int path_at = 0;
        if (sscanf(line, "%lx-%lx %7s %*s %*s %*s %n", &lo, &hi, perms, &path_at) < 3)
            continue;
        if (stack) {
            if (frame >= lo && frame < hi)
                found = contains(frame, hi);
        } else if (perms[0] == 'r' && perms[1] == 'w' && path_at > 0 &&
                   strstr(line + path_at, ".so")) {
            found = contains(lo, hi);
        }
    }
    fclose(f);
    return found;
}

int faas_func_call(void *handle, const char *in, size_t len)
{
    struct worker *w = handle;
    (void)in;
    (void)len;
    volatile char here = 0;
    int s = scan((uintptr_t)&here, 1);
    int g = scan(0, 0);
    char out[64];
    snprintf(out, sizeof out, "stack:%s global:%s", s > 0 ? "found" : "none",
             g > 0 ? "found" : "none");
    worker_puts(w, out);
    return 0;
}
