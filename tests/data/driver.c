/* Loads a (fused) root library the way a FaaS worker does, serves requests
 * from several threads, and unloads it: `driver LIB THREADS CALLS INPUT`.
 * Prints each thread's last output, in thread order. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "faas_worker.h"
#include "trace.h"

typedef int (*init_fn)(void);
typedef int (*create_fn)(void *, faas_invoke_fn, faas_append_fn, void **);
typedef int (*destroy_fn)(void *);
typedef int (*call_fn)(void *, const char *, size_t);
static create_fn create; static destroy_fn destroy; static call_fn call;
static int calls; static const char *input;

struct out { char buf[512]; size_t len; };
static void append(void *ctx, const char *d, size_t n) {
    struct out *o = ctx;
    if (o->len + n < sizeof o->buf) { memcpy(o->buf + o->len, d, n); o->len += n; }
}
static int invoke(void *ctx, const char *name, const char *in, size_t len, const char **out, size_t *olen) {
    (void)ctx; (void)name; (void)in; (void)len; *out = NULL; *olen = 0;
    return -1;
}
static void *serve(void *arg) {
    struct out *o = arg; void *h;
    if (create(o, invoke, append, &h) != 0) { o->len = 0; return NULL; }
    for (int i = 0; i < calls; i++) {
        o->len = 0;
        if (call(h, input, strlen(input)) != 0) { strcpy(o->buf, "FAILED"); o->len = 6; }
    }
    destroy(h);
    return NULL;
}
int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: driver LIB THREADS CALLS INPUT\n"); return 2; }
    int threads = atoi(argv[2]); calls = atoi(argv[3]); input = argv[4];
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) { fprintf(stderr, "%s\n", dlerror()); return 1; }
    init_fn init = (init_fn)dlsym(lib, "faas_init");
    create = (create_fn)dlsym(lib, "faas_create_func_worker");
    destroy = (destroy_fn)dlsym(lib, "faas_destroy_func_worker");
    call = (call_fn)dlsym(lib, "faas_func_call");
    if (!init || !create || !destroy || !call || init() != 0) return 1;
    pthread_t t[16]; struct out o[16];
    if (threads > 16) threads = 16;
    for (int i = 0; i < threads; i++) { o[i].len = 0; pthread_create(&t[i], NULL, serve, &o[i]); }
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < threads; i++) printf("%.*s\n", (int)o[i].len, o[i].buf);
    trace("dlclose");
    dlclose(lib);
    trace("exit");
    return 0;
}
