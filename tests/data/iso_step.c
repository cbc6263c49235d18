/*
 * iso_step.c - a function whose input is its script: "NAME/REST" calls
 * NAME with REST and answers "<" and NAME's output and ">" (or "<rc=N>"
 * when the call failed); "segv" writes through a null pointer; anything
 * "libc" makes strlen read through a bad pointer (a fault inside libc);
 * anything else answers itself. One library deployed under several names builds
 * any chain of calls: "Relay/Leaf/segv" makes Leaf fault below Relay.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "example_worker.h"

EXAMPLE_WORKER_ENTRY_POINTS

int faas_func_call(void *handle, const char *in, size_t len)
{
    struct worker *w = handle;
    const char *slash = memchr(in, '/', len);
    if (!slash) {
        if (len == 4 && memcmp(in, "segv", 4) == 0)
            *(volatile int *)(uintptr_t)8 = 1;
        if (len == 4 && memcmp(in, "libc", 4) == 0) {
            /* Opaque to the compiler: strlen really runs. */
            const char *volatile bad = (const char *)(uintptr_t)8;
            volatile size_t n = strlen(bad);
            (void)n;
        }
        w->append(w->ctx, in, len);
        return 0;
    }
    char name[64];
    size_t n = (size_t)(slash - in);
    if (n >= sizeof name)
        return -1;
    memcpy(name, in, n);
    name[n] = '\0';
    const char *out;
    size_t out_len;
    int rc = w->invoke(w->ctx, name, slash + 1, len - n - 1, &out, &out_len);
    if (rc != 0) {
        char line[32];
        snprintf(line, sizeof line, "<rc=%d>", rc);
        worker_puts(w, line);
        return 0;
    }
    worker_puts(w, "<");
    w->append(w->ctx, out, out_len);
    worker_puts(w, ">");
    return 0;
}
