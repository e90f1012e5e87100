#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine with node/npm: system packages (only the missing ones),
# node_modules (only when the lockfile changed), ferry's fuse-native addon built from native/ (only when its
# sources changed), then the build.
set -euo pipefail
cd "$(dirname "$0")/.."
# One set-up at a time (npm run torture for each data path at once would run two npm ci in one node_modules).
exec 9>"/tmp/ferry-setup-$(pwd | sha256sum | cut -c1-16).lock"
flock 9

missing=()
need_cmd() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need_lib() { grep -q "$1" <(ldconfig -p) || missing+=("$2"); } # not `ldconfig -p | grep -q`: grep leaving early gives ldconfig SIGPIPE, and pipefail reports the lib missing
need_pkg() { dpkg -s "$1" >/dev/null 2>&1 || missing+=("$1"); }

need_lib 'libfuse.so.2 ' libfuse2
need_cmd fusermount fuse
need_cmd fio fio
need_cmd bindfs bindfs
need_cmd make make
need_cmd g++ g++
need_cmd python3 python3
# The C unit tests (npm run test:native) run under AddressSanitizer, UBSan and ThreadSanitizer: gcc's runtimes.
need_pkg libasan8
need_pkg libubsan1
need_pkg libtsan2
need_cmd setpriv util-linux
need_cmd unshare util-linux
need_cmd setfattr attr
# Destination faults in the edge tests and the torture: immutable flags, small ext4 images on loop devices.
need_cmd chattr e2fsprogs
need_cmd mkfs.ext4 e2fsprogs
need_cmd losetup mount
need_cmd prlimit util-linux
# libvirt for test/guest/libvirt.test.ts and `ferry migrate --domain`: the daemon (its package creates the
# libvirt-qemu user QEMU runs as), its QEMU driver (only recommended, so named) and virsh.
need_cmd libvirtd libvirt-daemon-system
need_pkg libvirt-daemon-driver-qemu
need_cmd virsh libvirt-clients
# Debian's Prometheus (and promtool) for test/mount/metrics.test.ts: it scrapes `ferry mount --metrics` for real.
need_cmd prometheus prometheus
# bench:io's passthrough_ll baseline is built from libfuse3-dev's example source. Not fuse3: on Debian 12 it
# conflicts with (removes) `fuse`, whose fusermount ferry and bindfs use; libfuse 3 mounts as root without it.
need_pkg libfuse3-dev
need_cmd pkg-config pkg-config
need_cmd cc gcc
# bench:io's memory figure: page-cache residency of a file.
need_cmd fincore util-linux
for extra in ${FERRY_EXTRA_PACKAGES:-}; do dpkg -s "$extra" >/dev/null 2>&1 || missing+=("$extra"); done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[ -e /dev/fuse ] || modprobe fuse 2>/dev/null || true

stamp_file=node_modules/.ferry-setup-stamp
stamp=$( (node --version; cat package-lock.json) | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp_file" ] || [ "$(cat "$stamp_file")" != "$stamp" ]; then
  echo "setup: installing node modules"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$stamp" > "$stamp_file"
fi
npm run -s build:native
# Guests for the QEMU tests and the demo; the demo falls back to a host writer if this cannot work here.
bash scripts/guest/build.sh || echo "setup: the QEMU guest kit is unavailable: guest tests will fail, the demo uses a host writer"
npx tsc -p tsconfig.json
chmod +x dist/cli/main.js
