#!/usr/bin/env bash
# The native data path's own CPU cost per write (tracking, gate), apart from the pwrite and the FUSE round
# trip: compiles scripts/bench/native-cost.c with native/ferry's maps.c and gate.c and prints a table.
# Usage: npm run bench:native-cost (after scripts/setup.sh). fio A/B runs cannot resolve costs this small:
# their run-to-run noise on this machine is ±15%, even on read jobs where tracking does nothing.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/../.." && pwd)/native/ferry
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
gcc -O3 -Wall -Wextra -Werror -o "$build/native-cost" -I"$src" "$here/native-cost.c" "$src/maps.c" "$src/gate.c" -lpthread
echo "machine: $(nproc) cores, $(uname -r); 10M simulated 4 KiB writes per cell"
"$build/native-cost"
