#!/usr/bin/env bash
# The native data path's own CPU cost per write (tracking, gate), apart from the pwrite and the FUSE round
# trip: compiles scripts/bench/native-cost.c with the patched ferry-data.c and prints a table.
# Usage: npm run bench:native-cost (after scripts/setup.sh). fio A/B runs cannot resolve costs this small:
# their run-to-run noise on this machine is ±15%, even on read jobs where tracking does nothing.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/../.." && pwd)/node_modules/fuse-native
[ -f "$src/ferry-data.c" ] || { echo "bench: $src/ferry-data.c is missing: run scripts/setup.sh" >&2; exit 2; }
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
nodeinc=/usr/include/node
[ -f "$nodeinc/node_api.h" ] || nodeinc=$(dirname "$(dirname "$(command -v node)")")/include/node
# The N-API calls are never made here: empty stubs satisfy the linker.
grep -o 'napi_[a-z0-9_]*(' "$src/ferry-data.c" | tr -d '(' | sort -u | grep -v '^napi_value$' |
  awk '{ print "void " $1 "(void) {}" }' >"$build/stubs.c"
gcc -O3 -o "$build/native-cost" -I"$src" -I"$nodeinc" "$here/native-cost.c" "$build/stubs.c" -lpthread
echo "machine: $(nproc) cores, $(uname -r); 10M simulated 4 KiB writes per cell"
"$build/native-cost"
