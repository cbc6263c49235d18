/*
 * fp_worker.c - a platform worker that serves a deployment in one process
 * the way a nightcore worker does, independent of faasfuse's host, and
 * counts every RPC it serves: the exact per-edge counts a platform trace
 * gives, to check a sampled profile's decisions against.
 *
 *   fp_worker INPUTS REPEAT WEIGHTS ROOT NAME=LIB...
 *
 * Loads each LIB by the function ABI (faas_worker.h), one worker per
 * function, and serves every line of INPUTS as a request to ROOT, REPEAT
 * times. A nested call (the invoke callback) runs the callee's
 * faas_func_call in the same thread, on the same stack. The first pass's
 * outputs go to stdout as `faasfuse run` prints them (`rc=N<TAB>OUTPUT`);
 * WEIGHTS receives the counts of all passes as a faasfuse weights file:
 * {"calls": {CALLER: {CALLEE: N}}, "external": {ROOT: REQUESTS}}.
 *
 * Built with -fno-omit-frame-pointer, the path from the invoke callback to
 * the callee keeps rbp frames, as on distributions that build everything
 * with frame pointers: a frame-pointer walk from inside the callee passes
 * the callback's frame, whose return address is the caller's RPC site.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faas_worker.h"

#define MAX_FUNCS 16
#define OUT_CAP (64 * 1024)
#define ARENA_CAP (1024 * 1024)

struct func {
    const char *name;
    int (*call)(void *, const char *, size_t);
    void *handle;
    char out[OUT_CAP];
    size_t out_len;
    int busy;
    unsigned long long calls_to[MAX_FUNCS];
};

static struct func funcs[MAX_FUNCS];
static int nfuncs;
/* Outputs of nested calls, valid until the request returns. */
static char arena[ARENA_CAP];
static size_t arena_used;

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "fp_worker: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    exit(2);
}

static void append(void *ctx, const char *data, size_t len)
{
    struct func *f = ctx;
    if (len > OUT_CAP - f->out_len)
        die("output too long in", f->name);
    memcpy(f->out + f->out_len, data, len);
    f->out_len += len;
}

/* Run one request of f on this stack; its output is in f->out. Never
 * inlined: a frame of its own between the invoke callback and the callee. */
__attribute__((noinline)) static int serve(struct func *f, const char *in, size_t len)
{
    if (f->busy)
        die("re-entered", f->name);
    f->busy = 1;
    f->out_len = 0;
    /* A private NUL-terminated copy of the input, as the ABI promises. */
    char *copy = malloc(len + 1);
    if (!copy)
        die("out of memory", NULL);
    memcpy(copy, in, len);
    copy[len] = 0;
    int rc = f->call(f->handle, copy, len);
    free(copy);
    f->busy = 0;
    return rc;
}

/* Built with -DBARE_CALLBACK, the invoke callback alone keeps no frame
 * (the rest of the worker keeps theirs): the RPC site's return address
 * is then on no frame-pointer chain. */
#ifdef BARE_CALLBACK
#define CALLBACK_FRAME __attribute__((optimize("omit-frame-pointer")))
#else
#define CALLBACK_FRAME
#endif

/* The invoke callback: a nested call, served in-process. */
CALLBACK_FRAME static int invoke(void *ctx, const char *name, const char *in, size_t len, const char **out,
                  size_t *out_len)
{
    struct func *caller = ctx;
    int i = 0;
    while (i < nfuncs && strcmp(funcs[i].name, name) != 0)
        i++;
    *out = NULL;
    *out_len = 0;
    if (i == nfuncs)
        return -1;
    caller->calls_to[i]++;
    struct func *callee = &funcs[i];
    int rc = serve(callee, in, len);
    if (callee->out_len > ARENA_CAP - arena_used)
        die("nested outputs too long under", caller->name);
    memcpy(arena + arena_used, callee->out, callee->out_len);
    *out = arena + arena_used;
    *out_len = callee->out_len;
    arena_used += callee->out_len;
    return rc;
}

static void print_result(int rc, const char *out, size_t len)
{
    printf("rc=%d\t", rc);
    for (size_t i = 0; i < len; i++) {
        unsigned char b = (unsigned char)out[i];
        if (b == '\\')
            fputs("\\\\", stdout);
        else if (b == '\n')
            fputs("\\n", stdout);
        else if (b == '\t')
            fputs("\\t", stdout);
        else if (b >= 0x20 && b <= 0x7e)
            putchar(b);
        else
            printf("\\x%02x", b);
    }
    putchar('\n');
}

int main(int argc, char **argv)
{
    if (argc < 6 || argc - 5 > MAX_FUNCS)
        die("usage: fp_worker INPUTS REPEAT WEIGHTS ROOT NAME=LIB...", NULL);
    long repeat = atol(argv[2]);
    for (int a = 5; a < argc; a++) {
        char *eq = strchr(argv[a], '=');
        if (!eq)
            die("not NAME=LIB", argv[a]);
        *eq = 0;
        struct func *f = &funcs[nfuncs++];
        f->name = argv[a];
        void *lib = dlopen(eq + 1, RTLD_NOW | RTLD_LOCAL);
        if (!lib)
            die("dlopen", dlerror());
        int (*init)(void) = (int (*)(void))dlsym(lib, "faas_init");
        int (*create)(void *, faas_invoke_fn, faas_append_fn, void **) =
            (int (*)(void *, faas_invoke_fn, faas_append_fn, void **))dlsym(
                lib, "faas_create_func_worker");
        f->call = (int (*)(void *, const char *, size_t))dlsym(lib, "faas_func_call");
        if (!init || !create || !f->call)
            die("not a function library", eq + 1);
        if (init() != 0 || create(f, invoke, append, &f->handle) != 0)
            die("cannot start", f->name);
    }
    struct func *root = NULL;
    for (int i = 0; i < nfuncs; i++)
        if (strcmp(funcs[i].name, argv[4]) == 0)
            root = &funcs[i];
    if (!root)
        die("no such root", argv[4]);

    FILE *f = fopen(argv[1], "r");
    if (!f)
        die("cannot open", argv[1]);
    char **inputs = NULL;
    size_t n = 0, cap = 0;
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t got;
    while ((got = getline(&line, &line_cap, f)) >= 0) {
        if (got > 0 && line[got - 1] == '\n')
            line[--got] = 0;
        if (n == cap && !(inputs = realloc(inputs, (cap = cap * 2 + 64) * sizeof *inputs)))
            die("out of memory", NULL);
        inputs[n++] = strdup(line);
    }
    fclose(f);

    unsigned long long requests = 0;
    for (long r = 0; r < repeat; r++) {
        for (size_t i = 0; i < n; i++) {
            arena_used = 0;
            int rc = serve(root, inputs[i], strlen(inputs[i]));
            requests++;
            if (r == 0)
                print_result(rc, root->out, root->out_len);
        }
    }

    FILE *w = fopen(argv[3], "w");
    if (!w)
        die("cannot write", argv[3]);
    fputs("{\"calls\": {", w);
    const char *sep = "";
    for (int i = 0; i < nfuncs; i++) {
        const char *inner = "";
        for (int j = 0; j < nfuncs; j++) {
            if (!funcs[i].calls_to[j])
                continue;
            if (!*inner) {
                fprintf(w, "%s\"%s\": {", sep, funcs[i].name);
                sep = ", ";
            }
            fprintf(w, "%s\"%s\": %llu", inner, funcs[j].name, funcs[i].calls_to[j]);
            inner = ", ";
        }
        if (*inner)
            fputs("}", w);
    }
    fprintf(w, "}, \"external\": {\"%s\": %llu}}\n", root->name, requests);
    return fclose(w) == 0 ? 0 : 2;
}
