#!/usr/bin/env bash
# Builds the guest kit: a Debian cloud kernel and a tiny initramfs (busybox, virtio modules, the workload, /init)
# that boots unmodified QEMU on a disk image, runs a deterministic write workload and reports on the serial console.
# Everything comes from Debian packages and lands in .cache/guest/ (git-ignored). Idempotent; quiet on success
# apart from one line with the paths; rebuilds only when its inputs change.
set -euo pipefail
cd "$(dirname "$0")/../.."
src=scripts/guest
cache=.cache/guest
mkdir -p "$cache"
export DEBIAN_FRONTEND=noninteractive

# Runs a command with its output kept back unless it fails.
quiet() {
  local log
  if ! log=$("$@" 2>&1); then
    printf 'guest-kit: failed: %s\n%s\n' "$*" "$log" >&2
    return 1
  fi
}

updated=0
apt_update() {
  ((updated)) || quiet apt-get update -qq
  updated=1
}

missing=()
for pkg in qemu-system-x86 qemu-utils busybox-static cpio gcc libc6-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "guest-kit: installing ${missing[*]}" >&2
  apt_update
  quiet apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The metapackage names the current ABI's image package, e.g. "Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)".
# apt-cache takes seconds here (no pkgcache), so the answer is kept until the package lists change.
resolve_kernel() {
  apt-cache show --no-all-versions linux-image-cloud-amd64 2>/dev/null |
    awk '$1 == "Depends:" { for (i = 2; i <= NF; i++) if ($i ~ /^linux-image-.*-cloud-amd64$/) { v = $(i + 2); sub(/\).*/, "", v); print $i, v; exit } }'
}
lists=$(stat -c '%n %s %Y' /var/lib/apt/lists/*Packages* 2>/dev/null || true)
resolved=$cache/resolved-kernel
if [ -n "$lists" ] && [ -f "$resolved" ] && [ "$(tail -n +2 "$resolved")" = "$lists" ]; then
  read -r pkg pkg_version <"$resolved"
else
  found=$(resolve_kernel)
  if [ -z "$found" ]; then
    apt_update
    found=$(resolve_kernel)
    lists=$(stat -c '%n %s %Y' /var/lib/apt/lists/*Packages* 2>/dev/null || true)
  fi
  [ -n "$found" ] || { echo "guest-kit: apt-cache finds no linux-image-*-cloud-amd64 dependency of linux-image-cloud-amd64" >&2; exit 1; }
  read -r pkg pkg_version <<<"$found"
  printf '%s\n%s\n' "$found" "$lists" >"$resolved"
fi
ver=${pkg#linux-image-}
ver=${ver%-cloud-amd64}
busybox_version=$(dpkg-query -W -f='${Version}' busybox-static)

stamp=$( (cat "$src/build.sh" "$src/init.sh" "$src/workload.c"; echo "$pkg $pkg_version busybox $busybox_version") | sha256sum | cut -d' ' -f1)
outputs=("$cache/vmlinuz" "$cache/initrd.img" "$cache/workload-host")
done_line="guest-kit: ${outputs[*]} (kernel $ver-cloud-amd64)"
up_to_date=1
for f in "${outputs[@]}"; do [ -s "$f" ] || up_to_date=0; done
if ((up_to_date)) && [ "$(cat "$cache/stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "$done_line"
  exit 0
fi
rm -f "$cache/stamp"

# Kernel: downloaded and unpacked in the cache, never installed. Older ABIs' leftovers go.
kdir=$cache/kernel-${ver}_$pkg_version
if [ ! -f "$kdir/.unpacked" ]; then
  find "$cache" -maxdepth 1 \( -name 'linux-image-*.deb' -o -name 'kernel-*' \) -exec rm -rf {} +
  (cd "$cache" && quiet apt-get download "$pkg")
  deb=$(ls "$cache"/"${pkg}"_*.deb)
  mkdir -p "$kdir"
  dpkg -x "$deb" "$kdir"
  rm -f "$deb"
  touch "$kdir/.unpacked"
fi
vmlinuz=$(ls "$kdir"/boot/vmlinuz-*)
moddir=$(ls -d "$kdir"/lib/modules/*/)

# Initramfs tree, rebuilt from scratch each time.
root=$cache/initramfs
rm -rf "$root"
mkdir -p "$root"/{bin,dev,proc,sys,lib/modules}
cp /bin/busybox "$root/bin/busybox"
for applet in sh mount insmod sleep cat grep echo dmesg sync poweroff; do
  ln -s busybox "$root/bin/$applet"
done
# The kernel opens /dev/console before /init runs; without the node init would start with no stdio.
mknod -m 600 "$root/dev/console" c 5 1

# Virtio is modular in the cloud kernel and the package ships no modules.dep: init loads these in this order.
for mod in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk; do
  file=$(find "$moddir" -name "$mod.ko*" | head -n1)
  case "$file" in
    *.ko) cp "$file" "$root/lib/modules/$mod.ko" ;;
    *.ko.xz) xz -dc "$file" >"$root/lib/modules/$mod.ko" ;;
    *.ko.zst) zstd -qdc "$file" >"$root/lib/modules/$mod.ko" ;;
    '')
      # Built in, so there is nothing to load.
      grep -q "/$mod.ko\$" "$moddir/modules.builtin" 2>/dev/null || { echo "guest-kit: module $mod not found in $moddir" >&2; exit 1; }
      ;;
    *) echo "guest-kit: unexpected module file $file" >&2; exit 1 ;;
  esac
done

# One static binary serves the guest and the host, so both sides run exactly the same code.
quiet gcc -std=c99 -O2 -static -Wall -Wextra -Werror -o "$cache/workload-host.new" "$src/workload.c"
mv "$cache/workload-host.new" "$cache/workload-host"
cp "$cache/workload-host" "$root/bin/workload"
install -m 755 "$src/init.sh" "$root/init"

(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) | gzip -9 >"$cache/initrd.img.new"
mv "$cache/initrd.img.new" "$cache/initrd.img"
cp "$vmlinuz" "$cache/vmlinuz"
echo "$stamp" >"$cache/stamp"
echo "$done_line"
