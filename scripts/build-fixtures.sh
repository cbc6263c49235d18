#!/usr/bin/env bash
# Build the example function libraries from fixtures/ with the system
# compilers, in the variants users ship:
#   default      -O2
#   emit-relocs  -Wl,--emit-relocs
#   cet          -fcf-protection=full
#   relr         -Wl,-z,pack-relative-relocs (when the linker has it)
#   debug        -g
# plus OUTDIR/bad/libnofunc.so (a library missing faas_func_call).
#
# Usage: scripts/build-fixtures.sh OUTDIR
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
mkdir -p "$1"
OUT="$(cd "$1" && pwd)"
cd "$(dirname "$0")/.."
SRC=fixtures/functions
BASE=(-shared -fPIC -O2 -Ifixtures/include -Wall -Werror)

declare -A VARIANT=(
  [default]=""
  [emit-relocs]="-Wl,--emit-relocs"
  [cet]="-fcf-protection=full"
  [debug]="-g"
)
probe="$(mktemp -d)"
trap 'rm -rf "$probe"' EXIT
echo 'int f(void) { return 1; }' > "$probe/t.c"
if gcc -shared -fPIC -Wl,-z,pack-relative-relocs "$probe/t.c" -o "$probe/t.so" 2>/dev/null &&
   readelf -d "$probe/t.so" | grep -q RELR; then
  VARIANT[relr]="-Wl,-z,pack-relative-relocs"
fi

build() { # variant flags source
  local variant="$1" flags="$2" src="$3"
  local stem; stem="$(basename "${src%.*}")"
  local out="$OUT/$variant/lib$stem.so" cc=gcc libs=""
  case "$src" in *.cc) cc=g++ ;; esac
  [ "$stem" = store ] && libs="-lz"
  # shellcheck disable=SC2086
  $cc "${BASE[@]}" $flags "$src" -o "$out" $libs
}

pids=()
for variant in "${!VARIANT[@]}"; do
  mkdir -p "$OUT/$variant"
  for src in "$SRC"/*.c "$SRC"/*.cc; do
    build "$variant" "${VARIANT[$variant]}" "$src" & pids+=($!)
  done
done
mkdir -p "$OUT/bad"
gcc "${BASE[@]}" fixtures/bad/nofunc.c -o "$OUT/bad/libnofunc.so" & pids+=($!)
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
[ $status -eq 0 ] || { echo "build-fixtures: a compile failed" >&2; exit 1; }
echo "built ${#VARIANT[@]} variants into $OUT"
