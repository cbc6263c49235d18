/* uq_driver.c - load a function library, serve one request, unload it with
 * dlclose, and exit: what a host that unloads libraries does. A library
 * that promised the loader to stay (a bound unique symbol, DF_1_NODELETE)
 * must still be mapped when exit handlers call into it. */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include "faas_worker.h"

static int no_invoke(void *c, const char *f, const char *i, size_t l, const char **o, size_t *ol)
{
    (void)c; (void)f; (void)i; (void)l; *o = NULL; *ol = 0;
    return -1;
}
static void print(void *c, const char *d, size_t l) { (void)c; fwrite(d, 1, l, stdout); }

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    void *lib = dlopen(argv[1], RTLD_LAZY | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "%s\n", dlerror());
        return 2;
    }
    int (*init)(void) = (int (*)(void))dlsym(lib, "faas_init");
    int (*create)(void *, faas_invoke_fn, faas_append_fn, void **) =
        (int (*)(void *, faas_invoke_fn, faas_append_fn, void **))dlsym(lib, "faas_create_func_worker");
    int (*call)(void *, const char *, size_t) =
        (int (*)(void *, const char *, size_t))dlsym(lib, "faas_func_call");
    void *h = NULL;
    if (!init || !create || !call || init() != 0 || create(NULL, no_invoke, print, &h) != 0)
        return 2;
    int rc = call(h, argv[2], strlen(argv[2]));
    printf("\nrc=%d\n", rc);
    fflush(stdout);
    dlclose(lib);
    printf("unloaded\n");
    fflush(stdout);
    return 0;
}
