/* Test support: append one line to the file named by $FAASFUSE_TRACE. */
#ifndef TRACE_H
#define TRACE_H
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static void trace(const char *what) {
    const char *path = getenv("FAASFUSE_TRACE");
    if (!path) return;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd < 0) return;
    char line[128];
    size_t n = strlen(what);
    if (n > sizeof line - 1) n = sizeof line - 1;
    memcpy(line, what, n);
    line[n] = '\n';
    if (write(fd, line, n + 1) < 0) { /* best effort */ }
    close(fd);
}
#endif
