/*
 * iso_driver.c - a program that loads a fused image itself, as a host
 * other than faasfuse's might: `iso_driver MODE IMAGE [INPUT]`.
 *
 *   churn      create and destroy workers 200 times; print how many lines
 *              /proc/self/maps gained ("maps+N")
 *   dlclose    with a SIGSEGV handler of its own installed first: create
 *              and destroy a worker, dlclose the image, raise SIGSEGV
 *   user-dfl   raise SIGSEGV (default action) once a worker exists
 *   user-ign   SIGSEGV ignored; raise it, then call the root with INPUT
 *   handler    a SIGSEGV handler of its own (SA_SIGINFO, SA_RESETHAND,
 *              SIGUSR1 in sa_mask) first; raise SIGSEGV, call the root
 *              with INPUT, raise SIGSEGV again
 *   fast       call the root with INPUT; print the worker's fast_count
 *              (the first word of the runtime's worker) before and after
 *
 * Root outputs go to stdout as "rc=N OUTPUT"; the host RPCs it offers
 * fail.
 */
#define _GNU_SOURCE 1
#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "faas_worker.h"

static int (*init_fn)(void);
static int (*create_fn)(void *, faas_invoke_fn, faas_append_fn, void **);
static int (*destroy_fn)(void *);
static int (*call_fn)(void *, const char *, size_t);

static int no_rpc(void *ctx, const char *name, const char *in, size_t len, const char **out,
                  size_t *out_len)
{
    (void)ctx, (void)name, (void)in, (void)len;
    *out = NULL;
    *out_len = 0;
    return -1;
}

static void to_stdout(void *ctx, const char *data, size_t len)
{
    (void)ctx;
    fwrite(data, 1, len, stdout);
}

static void *load(const char *path)
{
    void *h = dlopen(path, RTLD_LAZY | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        exit(2);
    }
    init_fn = (int (*)(void))dlsym(h, "faas_init");
    create_fn = (int (*)(void *, faas_invoke_fn, faas_append_fn, void **))dlsym(
        h, "faas_create_func_worker");
    destroy_fn = (int (*)(void *))dlsym(h, "faas_destroy_func_worker");
    call_fn = (int (*)(void *, const char *, size_t))dlsym(h, "faas_func_call");
    if (!init_fn || !create_fn || !destroy_fn || !call_fn || init_fn() != 0)
        exit(2);
    return h;
}

static void *worker(void)
{
    void *w = NULL;
    if (create_fn(NULL, no_rpc, to_stdout, &w) != 0)
        exit(2);
    return w;
}

static void call(void *w, const char *in)
{
    fputs("rc=", stdout);
    fflush(stdout);
    char buf[16];
    int rc = call_fn(w, in, strlen(in));
    snprintf(buf, sizeof buf, " %d\n", rc);
    fputs(buf, stdout);
    fflush(stdout);
}

static long maps_lines(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    long n = 0;
    for (int c; f && (c = fgetc(f)) != EOF;)
        n += c == '\n';
    if (f)
        fclose(f);
    return n;
}

static void own_handler(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    sigset_t now;
    sigprocmask(SIG_BLOCK, NULL, &now);
    char line[96];
    int n = snprintf(line, sizeof line, "own handler: sig=%d code=%d usr1-blocked=%d\n", sig,
                     si->si_code, sigismember(&now, SIGUSR1));
    ssize_t r = write(1, line, (size_t)n);
    (void)r;
}

static void own_handler_exit(int sig)
{
    (void)sig;
    ssize_t r = write(1, "own handler ran\n", 16);
    (void)r;
    _exit(0);
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    const char *mode = argv[1], *input = argc > 3 ? argv[3] : "";
    setvbuf(stdout, NULL, _IONBF, 0);
    if (strcmp(mode, "dlclose") == 0) {
        signal(SIGSEGV, own_handler_exit);
        void *h = load(argv[2]);
        destroy_fn(worker());
        dlclose(h);
        raise(SIGSEGV);
        puts("survived");
        return 0;
    }
    if (strcmp(mode, "user-ign") == 0)
        signal(SIGSEGV, SIG_IGN);
    if (strcmp(mode, "handler") == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = own_handler;
        sa.sa_flags = SA_SIGINFO | SA_RESETHAND;
        sigemptyset(&sa.sa_mask);
        sigaddset(&sa.sa_mask, SIGUSR1);
        sigaction(SIGSEGV, &sa, NULL);
    }
    load(argv[2]);
    if (strcmp(mode, "churn") == 0) {
        destroy_fn(worker());
        long before = maps_lines();
        for (int i = 0; i < 200; i++)
            destroy_fn(worker());
        printf("maps+%ld\n", maps_lines() - before);
        return 0;
    }
    void *w = worker();
    if (strcmp(mode, "fast") == 0) {
        size_t before = *(size_t *)w;
        call(w, input);
        printf("fast_count %zu -> %zu\n", before, *(size_t *)w);
        return 0;
    }
    raise(SIGSEGV);
    puts("after the first signal");
    if (strcmp(mode, "user-dfl") != 0)
        call(w, input);
    if (strcmp(mode, "handler") == 0)
        raise(SIGSEGV);
    puts("survived");
    return 0;
}
