#!/usr/bin/env python3
"""Generate a large synthetic function library: NAME calls CALLEE through an
RPC site and carries MB megabytes of code in many small functions (each with
unwind info), plus data with relocations, like a big C++ service.

Usage: biglib.py NAME CALLEE MB OUTDIR [branchy|debug]
(writes OUTDIR/NAME.S and NAME.c; with `debug`, OUTDIR/NAME.c and NAME-K.c)

With `branchy`, each function is a chain of small blocks ending in
conditional jumps (forward over one block) with a direct call to another
function every eighth block: about a hundred branch sites per kilobyte, for
profile ingestion benchmarks at realistic diversity.
"""
import os
import sys

name, callee, mb, outdir = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
branchy = len(sys.argv) > 5 and sys.argv[5] == "branchy"
debug = len(sys.argv) > 5 and sys.argv[5] == "debug"


def debug_sources():
    """C functions for a -g build: loops over a struct list, a switch, an
    inlined helper, a static and a TLS variable each, so the DWARF has what
    real code's has (DIEs, location and range lists, line programs). About
    2.3 KB of library per function at -O2 -g with gcc; in files of 500."""
    count = max(1, int(mb * 1024 * 1024 / 2300))
    per_file = 500
    head = ["#include <string.h>",
            "struct rec { int id; double w; char name[16]; struct rec *next; };",
            "static inline __attribute__((always_inline)) int mix(int a, int b) "
            "{ return (a * 31) ^ (b >> 3); }"]
    for k in range(0, count, per_file):
        out = list(head)
        if k == 0:
            out.append(f"long {name}_work_0(long x) {{ return x + 1; }}")
        for i in range(k, min(count, k + per_file)):
            out.append(f"""__thread int tls_{i};
static int counter_{i};
int {name}_fn_{i}(struct rec *r, int n, const char *s) {{
  int acc = {i};
  double total = 0;
  for (int k = 0; k < n; k++, r = r->next) {{
    switch ((r->id + k) % 6) {{
      case 0: acc = mix(acc, r->id); total += r->w * k; break;
      case 1: acc += (int)strlen(r->name) * {i % 7 + 1}; tls_{i}++; break;
      case 2: total -= r->w / (k + 1); counter_{i} += acc; break;
      case 3: acc ^= s[k % 8] << (k % 5); break;
      case 4: total *= 1.0001; acc = mix(acc, (int)total); break;
      default: acc -= counter_{i} + tls_{i}; break;
    }}
    if (acc > {1000 + i}) acc /= 3;
  }}
  return acc + (int)total;
}}""")
        with open(os.path.join(outdir, f"{name}-{k // per_file}.c"), "w") as fh:
            fh.write("\n".join(out) + "\n")


if debug:
    debug_sources()
func_bytes = 1024
count = max(1, int(mb * 1024 * 1024 / func_bytes))
reps = (func_bytes - 8) // 4
asm = [".text"]
for i in range(count):
    f = f"{name}_work_{i}"
    asm += [f".globl {f}", f".type {f}, @function", f"{f}:", ".cfi_startproc"]
    if branchy:
        # Blocks of 10 bytes (add, cmp, jne over the next block), a call
        # (5 bytes) every eighth block: about 1 KiB per function.
        blocks = 96
        asm += [f".Lf{i}:", "  mov %rdi, %rax"]
        for k in range(blocks):
            asm += [f".Lb{i}_{k}:", "  addq $1, %rax", f"  cmpq ${k % 100}, %rax",
                    f"  jne .Lb{i}_{min(k + 2, blocks)}"]
            if k % 8 == 7:
                asm.append(f"  call .Lf{(i * 7919 + k) % count}")
        asm += [f".Lb{i}_{blocks}:", "  ret"]
    else:
        asm += ["  mov %rdi, %rax", f"  .rept {reps}", "  addq $1, %rax", "  .endr", "  ret"]
    asm += [".cfi_endproc", f".size {f}, .-{f}"]
# A table of function pointers: one dynamic relocation per function.
asm += [".section .data.rel.ro,\"aw\"", ".align 8", f".globl {name}_table", f"{name}_table:"]
asm += [f"  .quad {name}_work_{i}" for i in range(0, count, 16)]
asm.append('.section .note.GNU-stack,"",@progbits')
if not debug:
    with open(os.path.join(outdir, f"{name}.S"), "w") as fh:
        fh.write("\n".join(asm) + "\n")

c = f"""
#include <stdlib.h>
#include <stdio.h>
#include "faas_worker.h"
struct w {{ void *ctx; faas_invoke_fn invoke; faas_append_fn append; }};
long {name}_work_0(long);
int faas_init(void) {{ return 0; }}
int faas_create_func_worker(void *ctx, faas_invoke_fn i, faas_append_fn a, void **h) {{
    struct w *x = malloc(sizeof *x); if (!x) return -1;
    x->ctx = ctx; x->invoke = i; x->append = a; *h = x; return 0; }}
int faas_destroy_func_worker(void *h) {{ free(h); return 0; }}
int faas_func_call(void *h, const char *in, size_t len) {{
    struct w *x = h; const char *out = ""; size_t olen = 0; char buf[64];
    if ({1 if callee != "-" else 0} && x->invoke(x->ctx, "{callee}", in, len, &out, &olen) != 0) return -1;
    int n = snprintf(buf, sizeof buf, "{name}:%ld:", {name}_work_0((long)len));
    x->append(x->ctx, buf, (size_t)n); x->append(x->ctx, out, olen); return 0; }}
"""
with open(os.path.join(outdir, f"{name}.c"), "w") as fh:
    fh.write(c)
