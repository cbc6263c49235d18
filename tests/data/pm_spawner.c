/* Spawner (process model, threads): one call at a time per process, on the
 * thread that runs it. Its worker tries a nested call while being created
 * (no call is running); each call starts a second thread that invokes Echo
 * and appends while the main thread invokes Echo too. Only the main
 * thread's calls are served: "main=0(m) thread=-1 create=-1". */
#include <pthread.h>
#include <stdio.h>
#include "example_worker.h"

static int create_rc = 99;

int faas_init(void) { return 0; }
int faas_create_func_worker(void *ctx, faas_invoke_fn i, faas_append_fn a, void **h)
{
    const char *out;
    size_t out_len;
    create_rc = i(ctx, "Echo", "c", 1, &out, &out_len);
    return worker_create(ctx, i, a, h);
}
int faas_destroy_func_worker(void *h) { free(h); return 0; }

struct job {
    struct worker *w;
    int rc;
};

static void *second_thread(void *p)
{
    struct job *j = p;
    const char *out;
    size_t out_len;
    j->rc = j->w->invoke(j->w->ctx, "Echo", "t", 1, &out, &out_len);
    j->w->append(j->w->ctx, "LEAK", 4);
    return NULL;
}

int faas_func_call(void *h, const char *in, size_t len)
{
    struct worker *w = h;
    (void)in;
    (void)len;
    struct job j = {w, 99};
    pthread_t t;
    if (pthread_create(&t, NULL, second_thread, &j) != 0)
        return -1;
    const char *out = "";
    size_t out_len = 0;
    int rc = w->invoke(w->ctx, "Echo", "m", 1, &out, &out_len);
    pthread_join(t, NULL);
    char buf[96];
    snprintf(buf, sizeof buf, "main=%d(%.*s) thread=%d create=%d", rc, (int)out_len, out, j.rc,
             create_rc);
    worker_puts(w, buf);
    return 0;
}
