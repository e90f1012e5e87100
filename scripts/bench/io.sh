#!/usr/bin/env bash
# I/O benchmark: fio over four targets on the same scratch filesystem, in one run, printed as a markdown table.
#
#   targets  native          the backing directory itself
#            bindfs          `bindfs <src> <mnt>` with bindfs's default options (the exact command is printed)
#            ferry-js        `ferry mount` with dirty tracking, on the JavaScript data path (FERRY_NATIVE=0)
#            ferry           `ferry mount` with dirty tracking (default 64K blocks, 128K read-around), native data path
#            ferry-notrack   `ferry mount --no-track`, native data path
#            ferry-noreadaround  `ferry mount --read-around 0`, native data path (not in the default set: a reader
#                            for like-for-like comparisons with passthroughs that read only what is asked)
#            ferry-metrics   `ferry mount --metrics`, native data path, scraped every 100 ms (scripts/bench/scrape.mjs;
#                            not in the default set: side by side with ferry, what serving metrics costs)
#            ferry-before    `ferry mount` of another built checkout (FERRY_BENCH_BEFORE), native data path: a
#                            change side by side with the build before it
#   jobs     seq write/read 1M (MB/s); 4K randwrite/randread with 1 and with 16 requests in flight
#            (IOPS, p50/p99 completion latency). psync everywhere; "16 in flight" is numjobs=16 on one file.
#
# Usage (as root; needs fio, bindfs, fusermount and a built dist/, i.e. after scripts/setup.sh):
#   npm run bench:io                            # or: bash scripts/bench/io.sh
#   FERRY_BENCH_TMPFS=1 npm run bench:io         # backing store on a tmpfs: FUSE overhead stands out
#   FERRY_BENCH_DIRECT=1 npm run bench:io        # O_DIRECT (direct=1) instead of buffered I/O
# Environment:
#   FERRY_BENCH_DIR       parent of the scratch directory (default /var/tmp; the root disk, not a tmpfs)
#   FERRY_BENCH_TMPFS=1   mount a tmpfs inside the scratch directory and keep the backing files there
#   FERRY_BENCH_DIRECT=1  direct=1 (checked on every target first; a target without O_DIRECT is skipped)
#   FERRY_BENCH_RUNTIME   seconds per fio job (default 10; 6 jobs x 4 targets, about 5 minutes in all)
#   FERRY_BENCH_SIZE      file size per target (default 1G; fio/numfmt suffixes K M G)
#   FERRY_BENCH_QD_ENGINE psync (default: numjobs=16) or libaio (iodepth=16; only async with direct=1)
#   FERRY_BENCH_TARGETS   subset or extra, e.g. "bindfs ferry" (default: native bindfs ferry-js ferry ferry-notrack)
#   FERRY_BENCH_BEFORE    a checkout built with scripts/setup.sh (e.g. `git worktree add /tmp/before HEAD~1`):
#                         adds the ferry-before target unless FERRY_BENCH_TARGETS is given
#   FERRY_BENCH_KEEP=1    keep the raw fio JSON (its directory is printed); mounts are always removed
# Caches are dropped (sync; echo 3 > /proc/sys/vm/drop_caches) before every fio run. Every mount made here is
# removed on exit, pass or fail (a hung FUSE connection is aborted through /sys/fs/fuse/connections).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cli="$root/dist/cli/main.js"

runtime=${FERRY_BENCH_RUNTIME:-10}
size_arg=${FERRY_BENCH_SIZE:-1G}
direct=${FERRY_BENCH_DIRECT:-0}
use_tmpfs=${FERRY_BENCH_TMPFS:-0}
base=${FERRY_BENCH_DIR:-/var/tmp}
qd_engine=${FERRY_BENCH_QD_ENGINE:-psync}
before=${FERRY_BENCH_BEFORE:-}
default_targets="native bindfs ferry-js ferry ferry-notrack${before:+ ferry-before}"
targets=(${FERRY_BENCH_TARGETS:-$default_targets})
keep=${FERRY_BENCH_KEEP:-0}

die() { echo "bench: $*" >&2; exit 2; }
note() { echo "bench: $*" >&2; }

# ---- preflight ------------------------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || die "run as root (drop_caches, tmpfs, fusectl)"
for cmd in fio bindfs fusermount node findmnt numfmt timeout; do
  command -v "$cmd" >/dev/null || die "$cmd is missing (scripts/setup.sh installs it)"
done
[ -f "$cli" ] || die "$cli is missing: build first (npm run build, or scripts/setup.sh)"
[[ $runtime =~ ^[1-9][0-9]*$ ]] || die "FERRY_BENCH_RUNTIME must be a whole number of seconds, not '$runtime'"
[[ $direct =~ ^[01]$ ]] || die "FERRY_BENCH_DIRECT must be 0 or 1"
[[ $use_tmpfs =~ ^[01]$ ]] || die "FERRY_BENCH_TMPFS must be 0 or 1"
case $qd_engine in psync | libaio) ;; *) die "FERRY_BENCH_QD_ENGINE must be psync or libaio" ;; esac
size=$(numfmt --from=iec "${size_arg^^}" 2>/dev/null) || die "FERRY_BENCH_SIZE '$size_arg' is not a size"
((size >= 16 << 20 && size % (1 << 20) == 0)) || die "FERRY_BENCH_SIZE must be a whole number of MiB, at least 16M"
for t in "${targets[@]}"; do
  case $t in native | bindfs | ferry-js | ferry | ferry-notrack | ferry-noreadaround | ferry-metrics | ferry-before) ;; *) die "unknown target '$t'" ;; esac
  if [ "$t" = ferry-before ]; then
    [ -f "$before/dist/cli/main.js" ] || die "FERRY_BENCH_BEFORE: $before/dist/cli/main.js is missing (run scripts/setup.sh there)"
  fi
done
[ -d "$base" ] || die "FERRY_BENCH_DIR $base is not a directory"
[[ $base != *[[:space:]]* ]] || die "FERRY_BENCH_DIR must not contain whitespace"
grep -q '^fuse ' /proc/modules 2>/dev/null || [ -e /dev/fuse ] || modprobe fuse 2>/dev/null || true
[ -e /dev/fuse ] || die "/dev/fuse is missing"

need=$((${#targets[@]} * size + (256 << 20)))
if [ "$use_tmpfs" = 1 ]; then
  avail=$(($(awk '/^MemAvailable:/ {print $2}' /proc/meminfo) * 1024))
  ((avail > need + (1 << 30))) || die "not enough memory for a $(numfmt --to=iec $need) tmpfs ($(numfmt --to=iec $avail) available)"
else
  avail=$(df -B1 --output=avail "$base" | tail -1 | tr -d ' ')
  ((avail > need)) || die "not enough space in $base: need $(numfmt --to=iec $need), have $(numfmt --to=iec $avail)"
fi

# ---- state and cleanup ----------------------------------------------------------------------------------
scratch=$(mktemp -d "$base/ferry-bench.XXXXXX")
scratch=$(realpath "$scratch")
state="$scratch/state"
((${#state} <= 60)) || state=$(mktemp -d /tmp/ferry-bench-state.XXXXXX) # Unix socket paths are short
results="$scratch/results"
store="$scratch/store"
mkdir -p "$store" "$results" "$scratch/mnt" "$state"

cli_of() { if [ "$1" = ferry-before ]; then echo "$before/dist/cli/main.js"; else echo "$cli"; fi; }

declare -A mnt_of=() kind_of=() daemon_pid=() file_of=() label_of=() skip_reason=()
mounted=()           # mountpoints we made, in order
scraper=""           # the ferry-metrics target's scraper (scripts/bench/scrape.mjs)
tmpfs_mounted=0
fusectl_mounted=0
child=""             # the timeout(1) wrapping the running fio, if any
failures=0

mount_field() { # <mountpoint> <field number in /proc/self/mountinfo>: of the topmost mount there, or nothing
  awk -v m="$1" -v f="$2" '$5 == m { v = $f } END { if (v != "") print v }' /proc/self/mountinfo
}
is_mounted() { [ -n "$(mount_field "$1" 5)" ]; }

abort_connection() { # aborts the FUSE connection behind <mountpoint>: every waiting request gets ENOTCONN
  local dev minor
  dev=$(mount_field "$1" 3) || return 0
  [ -n "$dev" ] || return 0
  minor=${dev#*:}
  if [ -z "$(ls -A /sys/fs/fuse/connections 2>/dev/null)" ]; then
    mount -t fusectl none /sys/fs/fuse/connections 2>/dev/null && fusectl_mounted=1
  fi
  if [ -w "/sys/fs/fuse/connections/$minor/abort" ]; then
    note "aborting FUSE connection $minor ($1)"
    echo 1 >"/sys/fs/fuse/connections/$minor/abort" || true
  fi
}

responsive() { # statfs always reaches the FUSE server: a hung one leaves this in D state until SIGKILL
  local rc=0
  timeout -s KILL 5 stat -f "$1" >/dev/null 2>&1 || rc=$?
  ((rc != 137)) # an error (ENOTCONN: already aborted) is an answer
}

pid_of_cmdline() { # the pid whose argv is exactly the given words (to find the daemonized bindfs we started)
  local want p
  want=$(printf '%s\0' "$@" | od -An -tx1 | tr -d ' \n')
  for p in /proc/[0-9]*; do
    [ "$(od -An -tx1 "$p/cmdline" 2>/dev/null | tr -d ' \n')" = "$want" ] && { echo "${p#/proc/}"; return 0; }
  done
  return 1
}

unmount_target() {
  local t=$1 m=${mnt_of[$1]} pid=${daemon_pid[$1]:-}
  is_mounted "$m" || return 0
  responsive "$m" || abort_connection "$m"
  if [ "${kind_of[$t]}" = ferry ]; then
    timeout -k 5 60 node "$(cli_of "$t")" unmount "$m" --force --state-dir "$state" >/dev/null 2>&1 ||
      note "ferry unmount $m failed"
  else
    fusermount -uz "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  fi
  if is_mounted "$m"; then
    abort_connection "$m"
    fusermount -uz "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  fi
  if [ -n "$pid" ]; then # the serving process we started: give it time to leave, then end it by its id
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      note "server pid $pid of $m still running: killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM HUP
  [ -n "$scraper" ] && kill -TERM "$scraper" 2>/dev/null && wait "$scraper"
  if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
    kill -TERM "$child" 2>/dev/null
    sleep 1
    kill -KILL "$child" 2>/dev/null
  fi
  local i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do unmount_target "${mounted[i]}"; done
  if [ "$tmpfs_mounted" = 1 ]; then umount "$store" 2>/dev/null || umount -l "$store"; fi
  [ "$fusectl_mounted" = 1 ] && umount /sys/fs/fuse/connections 2>/dev/null
  local left
  left=$(awk -v s="$scratch/" 'index($5 "/", s) == 1 { print $5 }' /proc/self/mountinfo)
  if [ -n "$left" ]; then
    note "mounts still present, leaving $scratch in place: $left"
    rc=1
  else
    if [ "$keep" = 1 ]; then
      local kept
      kept=$(mktemp -d "$base/ferry-bench-results.XXXXXX")
      cp -a "$results/." "$kept/" && note "raw results kept in $kept"
    fi
    rm -rf --one-file-system "$scratch"
    [[ $state == /tmp/ferry-bench-state.* ]] && rm -rf "$state"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

run_bounded() { # <seconds> [--stderr file] cmd...: in the background so traps fire at once; 124/137 = timed out
  local limit=$1 rc=0 errfile=/dev/stderr
  shift
  if [ "$1" = --stderr ]; then errfile=$2; shift 2; fi
  # The child's stderr only: a trap running meanwhile must still print to ours.
  timeout -k 10 "$limit" "$@" 2>"$errfile" &
  child=$!
  wait "$child" || rc=$?
  child=""
  return "$rc"
}

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# ---- the backing store and the targets -----------------------------------------------------------------
if [ "$use_tmpfs" = 1 ]; then
  mount -t tmpfs -o "size=$need,mode=0755" ferry-bench "$store"
  tmpfs_mounted=1
fi
store_fs=$(findmnt -n -o FSTYPE --target "$store")
store_src=$(findmnt -n -o SOURCE --target "$store")
[ "$use_tmpfs" = 1 ] || [ "$store_fs" != tmpfs ] || note "note: $base is on a tmpfs already (FERRY_BENCH_DIR)"

for t in "${targets[@]}"; do
  mkdir -p "$store/$t"
  case $t in
    native) kind_of[$t]=native label_of[$t]="native" ;;
    bindfs) kind_of[$t]=bindfs label_of[$t]="bindfs" ;;
    ferry-js) kind_of[$t]=ferry label_of[$t]="ferry JS path" ;;
    ferry) kind_of[$t]=ferry label_of[$t]="ferry native" ;;
    ferry-notrack) kind_of[$t]=ferry label_of[$t]="ferry native --no-track" ;;
    ferry-noreadaround) kind_of[$t]=ferry label_of[$t]="ferry native --read-around 0" ;;
    ferry-metrics) kind_of[$t]=ferry label_of[$t]="ferry native --metrics, scraped every 100 ms" ;;
    ferry-before) kind_of[$t]=ferry label_of[$t]="ferry native, $(git -C "$before" log -1 --format=%h 2>/dev/null || echo before)" ;;
  esac
  if [ "$t" = native ]; then
    mnt_of[$t]="$store/$t"
  else
    mnt_of[$t]="$scratch/mnt/$t"
    mkdir -p "${mnt_of[$t]}"
  fi
  file_of[$t]="${mnt_of[$t]}/bench.dat"
done

# Lay out every file on the backing store before anything is mounted: real data, same size everywhere.
note "laying out $(numfmt --to=iec "$size") per target in $store ($store_fs)"
for t in "${targets[@]}"; do
  run_bounded 600 fio --name=layout --filename="$store/$t/bench.dat" --rw=write --bs=1M --size="$size" \
    --ioengine=psync --end_fsync=1 --output=/dev/null ||
    die "laying out $store/$t/bench.dat failed"
done

bindfs_cmd=""
ferry_cmds=()
for t in "${targets[@]}"; do
  m=${mnt_of[$t]}
  case $t in
    bindfs)
      bindfs_cmd="bindfs $store/$t $m"
      mounted+=("$t")
      run_bounded 60 bindfs "$store/$t" "$m" || die "bindfs mount failed"
      daemon_pid[$t]=$(pid_of_cmdline bindfs "$store/$t" "$m") || note "cannot find the bindfs process"
      ;;
    ferry-js | ferry | ferry-notrack | ferry-noreadaround | ferry-metrics | ferry-before)
      args=(mount "$store/$t" "$m" --state-dir "$state")
      [ "$t" = ferry-notrack ] && args+=(--no-track)
      [ "$t" = ferry-noreadaround ] && args+=(--read-around 0)
      [ "$t" = ferry-metrics ] && args+=(--metrics "unix:$scratch/metrics.sock")
      native=1
      [ "$t" = ferry-js ] && native=0
      ferry_cmds+=("FERRY_NATIVE=$native node $(cli_of "$t" | sed "s|^$root/||") ${args[*]}")
      mounted+=("$t")
      run_bounded 60 env FERRY_NATIVE=$native node "$(cli_of "$t")" "${args[@]}" || die "ferry mount $m failed"
      daemon_pid[$t]=$(node "$(cli_of "$t")" status "$m" --json --state-dir "$state" |
        node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).pid))')
      if [ "$t" = ferry-metrics ]; then
        node "$here/scrape.mjs" "unix:$scratch/metrics.sock" 100 &
        scraper=$!
      fi
      ;;
  esac
  is_mounted "$m" || [ "$t" = native ] || die "$m is not mounted"
done

if [ "$direct" = 1 ]; then # O_DIRECT read of block 0 and write of it back, on every target
  for t in "${targets[@]}"; do
    if ! err=$(timeout -s KILL 30 dd if="${file_of[$t]}" of="${file_of[$t]}" bs=4k count=1 \
      iflag=direct oflag=direct conv=notrunc status=none 2>&1); then
      skip_reason[$t]="O_DIRECT fails: ${err##*: }"
      note "${label_of[$t]}: ${skip_reason[$t]}; skipped"
    fi
  done
fi

# ---- jobs -----------------------------------------------------------------------------------------------
# id | label | fio args
jobs=(
  "seqwrite|seq write 1M, MB/s|--rw=write --bs=1M --numjobs=1"
  "seqread|seq read 1M, MB/s|--rw=read --bs=1M --numjobs=1"
  "randwrite1|randwrite 4K QD1, IOPS (p50/p99 µs)|--rw=randwrite --bs=4k --numjobs=1"
  "randread1|randread 4K QD1, IOPS (p50/p99 µs)|--rw=randread --bs=4k --numjobs=1"
)
if [ "$qd_engine" = psync ]; then
  qd16="--numjobs=16"
  qd16_desc="psync numjobs=16 (16 threads on one file)"
else
  qd16="--numjobs=1 --ioengine=libaio --iodepth=16"
  qd16_desc="libaio iodepth=16"
fi
jobs+=(
  "randwrite16|randwrite 4K 16 in flight, IOPS (p50/p99 µs)|--rw=randwrite --bs=4k $qd16"
  "randread16|randread 4K 16 in flight, IOPS (p50/p99 µs)|--rw=randread --bs=4k $qd16"
)
common="--ioengine=psync --direct=$direct --size=$size --time_based --runtime=$runtime --group_reporting"
# iomem_align: page-aligned buffers, as qemu uses. fio's default buffered-I/O buffer starts 16 bytes into a page,
# which makes every 1M read or write through FUSE direct_io 9 requests (one of them 16 bytes) instead of 8.
common+=" --iomem_align=4096 --lat_percentiles=1 --allow_file_create=0 --fallocate=none --invalidate=1 --randrepeat=1"
common+=" --thread"

# The plan the table is built from.
{
  printf '{"direct":%s,"qd16":"%s","targets":[' "$direct" "$qd16_desc"
  sep=""
  for t in "${targets[@]}"; do
    printf '%s{"id":"%s","label":"%s","skip":"%s"}' "$sep" "$t" "${label_of[$t]}" "${skip_reason[$t]:-}"
    sep=","
  done
  printf '],"jobs":['
  sep=""
  for j in "${jobs[@]}"; do
    IFS='|' read -r id label _ <<<"$j"
    printf '%s{"id":"%s","label":"%s"}' "$sep" "$id" "$label"
    sep=","
  done
  printf ']}\n'
} >"$results/plan.json"

ferry_status() { # <target> <out file>
  timeout -k 5 20 node "$cli" status "${mnt_of[$1]}" --json --state-dir "$state" >"$2" 2>/dev/null || rm -f "$2"
}

declare -A hung=()
# CPU accounting, to tell how busy the rest of the machine was: all busy CPU time (/proc/stat) minus this
# script's own and its children's (fio, ferry status; `times`) and the mount servers' (/proc/<pid>/stat).
ticks=$(getconf CLK_TCK)
cpu_busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
cpu_ours() { # sets $ours; `times` must run in this shell (a subshell has its own, fresh counters)
  local t=0 p f
  times >"$scratch/times" # the shell's own user/sys time, then its children's (reaped descendants included)
  for f in $(<"$scratch/times"); do
    [[ $f =~ ^([0-9]+)m([0-9.]+)s$ ]] || continue
    t=$(awk -v t="$t" -v m="${BASH_REMATCH[1]}" -v s="${BASH_REMATCH[2]}" -v k="$ticks" 'BEGIN { print t + (m * 60 + s) * k }')
  done
  for p in "${daemon_pid[@]}"; do
    [ -r "/proc/$p/stat" ] || continue
    t=$(awk -v t="$t" '{ sub(/^.*\) /, ""); print t + $12 + $13 }' "/proc/$p/stat")
  done
  ours=$t
}
busy_start=$(cpu_busy)
cpu_ours
ours_start=$ours
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
started=$SECONDS
for j in "${jobs[@]}"; do
  IFS='|' read -r id label args <<<"$j"
  for t in "${targets[@]}"; do
    [ -z "${skip_reason[$t]:-}" ] || continue
    out="$results/$id.$t"
    if [ -n "${hung[$t]:-}" ]; then echo "target hung earlier" >"$out.error"; continue; fi
    note "$(printf '%-12s %-16s' "$id" "${label_of[$t]}") (t+$((SECONDS - started))s)"
    drop_caches
    [ "${kind_of[$t]}" = ferry ] && ferry_status "$t" "$out.before.json"
    rc=0
    # shellcheck disable=SC2086 # $common and $args are word lists
    run_bounded $((runtime * 2 + 60)) --stderr "$out.stderr" fio --name="$id" --filename="${file_of[$t]}" $common $args \
      --output-format=json --output="$out.json" || rc=$?
    if ((rc == 124 || rc == 137)); then
      echo "fio timed out: the mount hung" >"$out.error"
      hung[$t]=1
      abort_connection "${mnt_of[$t]}"
      failures=$((failures + 1))
      continue
    elif ((rc != 0)); then
      { echo "fio exit $rc"; tail -3 "$out.stderr"; } >"$out.error"
      failures=$((failures + 1))
    fi
    [ "${kind_of[$t]}" = ferry ] && ferry_status "$t" "$out.after.json"
  done
done
drop_caches
cpu_ours
others=$(awk -v b0="$busy_start" -v b1="$(cpu_busy)" -v o0="$ours_start" -v o1="$ours" -v secs=$((SECONDS - started)) -v k="$ticks" \
  'BEGIN { x = ((b1 - b0) - (o1 - o0)) / k / (secs > 0 ? secs : 1); printf "%.2f", x < 0 ? 0 : x }')

# ---- report ---------------------------------------------------------------------------------------------
if [ "$use_tmpfs" = 1 ]; then
  where="tmpfs mounted at $store (FERRY_BENCH_TMPFS=1): the backing store is RAM, so FUSE overhead stands out"
else
  where="$store_fs on $store_src, in $store (page cache dropped before every run)"
fi
echo
echo "## ferry I/O benchmark"
echo
echo "- machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/^MemTotal:/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME")"
echo "- backing store: $where"
echo "- other activity during the jobs: $others CPUs busy on average outside fio and the mount servers (kernel threads included; of $(nproc)); load average at the start $load_start"
echo "- versions: $(fio --version), bindfs $(bindfs --version 2>&1 | awk '{print $2; exit}'), node $(node --version), ferry $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$root" diff --quiet HEAD 2>/dev/null || echo '+local changes')"
echo "- I/O: $([ "$direct" = 1 ] && echo 'O_DIRECT (direct=1)' || echo 'buffered (direct=0)'); 16 in flight = $qd16_desc; one $(numfmt --to=iec "$size") file per target, laid out beforehand"
[ -z "$bindfs_cmd" ] || echo "- bindfs: \`$bindfs_cmd\` (default options: single-threaded, O_DIRECT not forwarded, xattrs mirrored)"
for c in "${ferry_cmds[@]}"; do echo "- ferry: \`$c\`"; done
echo "- fio, per job and target (caches dropped before each run):"
echo '  ```'
for j in "${jobs[@]}"; do
  IFS='|' read -r id label args <<<"$j"
  echo "  fio --name=$id --filename=<target>/bench.dat $common $args --output-format=json"
done
echo '  ```'
echo
node "$here/fio-table.mjs" "$results"
if ((failures)); then
  echo
  echo "bench: $failures run(s) failed" >&2
  exit 1
fi
