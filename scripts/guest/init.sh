#!/bin/sh
# /init of the ferry guest (busybox sh). Parameters come from the kernel command line, which hands key=value
# arguments without dots to init as environment variables: seed, writes, seconds, region, bs, direct, fsync,
# delay_us, rate, start_delay, trace. Writes to /dev/vda, checksums what is there after dropping caches, prints
#   FERRY-RESULT-BEGIN / one JSON line / FERRY-RESULT-END
# on the serial console and powers off. Markers on the way: FERRY-GUEST-UP (disk found, before start_delay) and
# FERRY-WORKLOAD-START (from the workload, as its first write goes out). Any failure: FERRY-ERROR <why>.
# trace=1: the workload writes every write's start and latency to the second disk, /dev/vdb (see workload.c).
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# Kernel messages (I/O errors above all) would break into the result lines; dmesg still keeps them for counting.
echo 1 >/proc/sys/kernel/printk

finish() {
  sync
  # The serial port sends what echo queued after echo returns: let it drain before the power goes.
  sleep 1
  poweroff -f
  sleep 10
}
fail() {
  echo "FERRY-ERROR $*"
  finish
}

# The package has no modules.dep, so dependencies come first by hand. build.sh leaves out any that are built in.
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk; do
  [ -e "/lib/modules/$m.ko" ] || continue
  insmod "/lib/modules/$m.ko" || fail "insmod $m"
done

# wait_disk <name> <seconds>: the disk's node shows up a moment after its driver is loaded.
wait_disk() {
  tries=0
  while [ ! -b "/dev/$1" ]; do
    tries=$((tries + 1))
    [ "$tries" -le $(($2 * 10)) ] || fail "no /dev/$1 after $2 s"
    sleep 0.1
  done
}
wait_disk vda 10

disk=$(($(cat /sys/block/vda/size) * 512))
max_default=$((64 << 20))
if [ -z "$region" ]; then
  region=$disk
  [ "$region" -le "$max_default" ] || region=$max_default
fi
read -r up_s _ </proc/uptime
echo "FERRY-GUEST-UP uptime=$up_s"
[ "${start_delay:-0}" -eq 0 ] || sleep "$start_delay"

[ -n "$writes$seconds" ] || writes=1000
args="seed=${seed:-1} region=$region bs=${bs:-4096} direct=${direct:-0} fsync=${fsync:-0} delay_us=${delay_us:-0} rate=${rate:-0}"
[ -z "$writes" ] || args="$args writes=$writes"
[ -z "$seconds" ] || args="$args seconds=$seconds"
if [ "${trace:-0}" -ne 0 ]; then
  wait_disk vdb 2
  args="$args trace=/dev/vdb"
fi
# A heartbeat for a host that sees no progress: is the guest alive, is the workload blocked in the kernel, are
# requests in flight on the disk? (reads and writes in flight, from the block layer.)
# Two ticks with requests in flight and none completed: a stall; print once where the block layer holds them.
# stall_poke=1 then nudges, one step a tick, until a request completes: first the queues (restart stopped ones,
# run them, kick the requeue list), then a fresh read (a new request: QEMU rereads the ring on its kick, and its
# completion interrupt makes the driver reap every used entry). Which step ended the stall says where it was.
(
  last='' stalls=0 poked=''
  while sleep 5; do
    pid=$(pidof workload) || continue
    inflight=$(tr -s ' ' '\n' </sys/block/vda/inflight | grep . | paste -sd,)
    echo "FERRY-TICK up=$(cut -d' ' -f1 /proc/uptime) state=$(cut -d' ' -f3 "/proc/$pid/stat") wchan=$(cat "/proc/$pid/wchan") inflight=$inflight"
    # Completed reads and writes, and requests in flight (/sys/block/vda/stat fields 1, 5, 9): no completion
    # while requests are in flight is a stall.
    # shellcheck disable=SC2046 # the split is the point
    set -- $(cat /sys/block/vda/stat)
    done_ios="$1,$5"
    if [ "$done_ios" = "$last" ] && [ "$9" -gt 0 ]; then
      stalls=$((stalls + 1))
    else
      [ -z "$poked" ] || echo "FERRY-STALL over after poke: $poked"
      stalls=0 poked=''
    fi
    last=$done_ios
    if [ "$stalls" -eq 1 ]; then
      mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
      grep virtio /proc/interrupts | sed 's/^/FERRY-STALL irq /'
      for f in /sys/kernel/debug/block/vda/state /sys/kernel/debug/block/vda/requeue_list /sys/kernel/debug/block/vda/hctx*/* /sys/kernel/debug/block/vda/hctx*/cpu*/* /sys/kernel/debug/block/vda/sched/*; do
        case "$f" in *tags_bitmap) continue ;; esac
        [ -f "$f" ] && [ -r "$f" ] && echo "FERRY-STALL ${f#/sys/kernel/debug/block/vda/}: $(cat "$f" 2>&1 | head -c 600 | paste -sd'|')"
      done
    fi
    [ "${stall_poke:-0}" -ne 0 ] || continue
    case $stalls in
      1)
        for verb in start run kick; do echo "$verb" >/sys/kernel/debug/block/vda/state; done
        poked=queues
        echo "FERRY-STALL poke: $poked"
        ;;
      2)
        dd if=/dev/vda of=/dev/null bs=4096 count=1 iflag=direct 2>/dev/null &
        poked=read
        echo "FERRY-STALL poke: $poked"
        ;;
    esac
  done
) &
ticker=$!
# shellcheck disable=SC2086 # word splitting of $args is the point
write=$(workload write /dev/vda $args) || fail "workload write $args: exit $?"
kill "$ticker"

sync
echo 3 >/proc/sys/vm/drop_caches
checksum=$(workload checksum /dev/vda "$region") || fail "workload checksum: exit $?"
io_errors=$(dmesg | grep -c -e 'I/O error' -e 'blk_update_request' -e 'Buffer I/O error')

echo FERRY-RESULT-BEGIN
echo "{\"write\":$write,\"checksum\":$checksum,\"dmesg_io_errors\":${io_errors:-0},\"disk_bytes\":$disk,\"up_s\":$up_s}"
echo FERRY-RESULT-END
finish
