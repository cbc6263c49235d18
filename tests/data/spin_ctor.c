/* A function library whose constructor never returns: the load test must
 * time out and kill it. It records its pid in $SPIN_PID_FILE first. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include "faas_worker.h"

__attribute__((constructor)) static void spin(void) {
    const char *f = getenv("SPIN_PID_FILE");
    if (f) {
        FILE *o = fopen(f, "w");
        if (o) {
            fprintf(o, "%d\n", (int)getpid());
            fclose(o);
        }
    }
    for (;;)
        pause();
}

int faas_init(void) { return 0; }
int faas_create_func_worker(void *ctx, faas_invoke_fn invoke, faas_append_fn append,
                            void **handle) {
    (void)ctx; (void)invoke; (void)append;
    *handle = 0;
    return 0;
}
int faas_destroy_func_worker(void *handle) { (void)handle; return 0; }
int faas_func_call(void *handle, const char *input, size_t len) {
    (void)handle; (void)input; (void)len;
    return 0;
}
