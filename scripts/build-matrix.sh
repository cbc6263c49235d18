#!/usr/bin/env bash
# Build the example function libraries from fixtures/ in the compiler and
# flag combinations Linux distributions and users ship (the compiler matrix
# of tests/compilers.rs), one directory per variant:
#   gcc-O0 gcc-O1 gcc-O2 gcc-O3 gcc-Os   plain gcc
#   gcc-hardened   -O2 -fstack-protector-strong -D_FORTIFY_SOURCE=2
#                  -fstack-clash-protection -fcf-protection -z relro -z now
#   gcc-lto        -O2 -flto
#   gcc-noplt      -O2 -fno-plt
#   gcc-retpoline  -O2 -mindirect-branch=thunk -mfunction-return=thunk
#   gcc-fp         -O2 -fno-omit-frame-pointer -mno-omit-leaf-frame-pointer
#                  (distributions that build everything with frame pointers)
#   gcc-pgo-gen    -O2 -fprofile-generate=PGO_DIR/<lib>  (training build)
#   gcc-pgo        -O2 -fprofile-use=PGO_DIR/<lib>       (after training)
#   clang-O0 clang-O2 clang-O3   clang-16 linked with lld-16
#   clang-retpoline              clang-16 -O2 -mretpoline, lld-16
# and with debug info (the debug-info matrix of tests/debuginfo.rs):
#   gcc-g-dwarf4 gcc-g-dwarf5     -O2 -g -gdwarf-4 / -gdwarf-5
#   gcc-g3                       -O2 -g3 (macro info)
#   gcc-gz                       -O2 -g -gz (compressed debug sections)
#   gcc-g-types                  -O2 -g -gdwarf-4 -fdebug-types-section
#   gcc-split-dwarf              -O2 -g -gsplit-dwarf (.dwo files beside
#                                each library: OUTDIR/VARIANT/libX.so-X.dwo)
#   clang-g-dwarf4 clang-g-dwarf5 clang-gz clang-g-types
#                                the same with clang-16 and lld-16
# A missing compiler is an error, never a skipped variant.
#
# Usage: scripts/build-matrix.sh OUTDIR VARIANT...   (PGO_DIR for gcc-pgo*)
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 OUTDIR VARIANT..." >&2; exit 2; }
mkdir -p "$1"
OUT="$(cd "$1" && pwd)"
shift
cd "$(dirname "$0")/.."
SRC=fixtures/functions
BASE=(-shared -fPIC -Ifixtures/include -Wall)
CLANG=clang-16
CLANGXX=clang++-16
LLD=ld.lld-16

flags_of() { # variant -> "cc cxx flags"
  case "$1" in
    gcc-O0|gcc-O1|gcc-O2|gcc-O3|gcc-Os) echo "gcc g++ -${1#gcc-}" ;;
    gcc-hardened) echo "gcc g++ -O2 -fstack-protector-strong -D_FORTIFY_SOURCE=2 -fstack-clash-protection -fcf-protection -Wl,-z,relro -Wl,-z,now" ;;
    gcc-lto) echo "gcc g++ -O2 -flto=1" ;;
    gcc-noplt) echo "gcc g++ -O2 -fno-plt" ;;
    gcc-retpoline) echo "gcc g++ -O2 -mindirect-branch=thunk -mfunction-return=thunk" ;;
    gcc-fp) echo "gcc g++ -O2 -fno-omit-frame-pointer -mno-omit-leaf-frame-pointer" ;;
    gcc-pgo-gen) echo "gcc g++ -O2 -fprofile-update=atomic -fprofile-generate=@PGO@" ;;
    gcc-pgo) echo "gcc g++ -O2 -Wno-missing-profile -fprofile-use=@PGO@ -fprofile-partial-training" ;;
    clang-O0|clang-O2|clang-O3) echo "$CLANG $CLANGXX -${1#clang-} -fuse-ld=lld --ld-path=$(command -v $LLD || echo $LLD)" ;;
    clang-retpoline) echo "$CLANG $CLANGXX -O2 -mretpoline -fuse-ld=lld --ld-path=$(command -v $LLD || echo $LLD)" ;;
    gcc-g-dwarf4|gcc-g-dwarf5) echo "gcc g++ -O2 -g -gdwarf-${1#gcc-g-dwarf}" ;;
    gcc-g3) echo "gcc g++ -O2 -g3" ;;
    gcc-gz) echo "gcc g++ -O2 -g -gz" ;;
    gcc-g-types) echo "gcc g++ -O2 -g -gdwarf-4 -fdebug-types-section" ;;
    gcc-split-dwarf) echo "gcc g++ -O2 -g -gsplit-dwarf" ;;
    clang-g-dwarf4|clang-g-dwarf5) echo "$CLANG $CLANGXX -O2 -g -gdwarf-${1#clang-g-dwarf} -fuse-ld=lld --ld-path=$(command -v $LLD || echo $LLD)" ;;
    clang-gz) echo "$CLANG $CLANGXX -O2 -g -gz -fuse-ld=lld --ld-path=$(command -v $LLD || echo $LLD)" ;;
    clang-g-types) echo "$CLANG $CLANGXX -O2 -g -fdebug-types-section -fuse-ld=lld --ld-path=$(command -v $LLD || echo $LLD)" ;;
    *) echo "build-matrix: unknown variant $1" >&2; return 1 ;;
  esac
}

for v in "$@"; do
  read -r cc cxx _ <<<"$(flags_of "$v")"
  for tool in "$cc" "$cxx"; do
    command -v "$tool" >/dev/null || { echo "build-matrix: $tool is not installed (variant $v)" >&2; exit 1; }
  done
  case "$v" in clang-*) command -v $LLD >/dev/null || { echo "build-matrix: $LLD is not installed" >&2; exit 1; } ;; esac
  case "$v" in gcc-pgo*) [ -n "${PGO_DIR:-}" ] || { echo "build-matrix: $v needs PGO_DIR" >&2; exit 1; } ;; esac
done

build() { # variant source
  local v="$1" src="$2" stem cc cxx flags libs=""
  stem="$(basename "${src%.*}")"
  read -r cc cxx flags <<<"$(flags_of "$v")"
  flags="${flags//@PGO@/${PGO_DIR:-}/$stem}"
  case "$src" in *.cc) cc="$cxx" ;; esac
  [ "$stem" = store ] && libs="-lz"
  # shellcheck disable=SC2086
  $cc "${BASE[@]}" $flags "$src" -o "$OUT/$v/lib$stem.so" $libs
}

# At most two compiles at a time: the machines are small.
jobs=()
status=0
for v in "$@"; do
  mkdir -p "$OUT/$v"
  for src in "$SRC"/*.c "$SRC"/*.cc; do
    build "$v" "$src" & jobs+=($!)
    if [ ${#jobs[@]} -ge "${MATRIX_JOBS:-2}" ]; then
      wait "${jobs[0]}" || status=1
      jobs=("${jobs[@]:1}")
    fi
  done
done
for p in "${jobs[@]}"; do wait "$p" || status=1; done
[ $status -eq 0 ] || { echo "build-matrix: a compile failed" >&2; exit 1; }
echo "built $# variants into $OUT"
