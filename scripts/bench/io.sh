#!/usr/bin/env bash
# I/O benchmark: fio over several targets on the same scratch filesystem, in one run, printed as markdown tables.
#
#   targets  native          the backing directory itself
#            bindfs          `bindfs <src> <mnt>` with bindfs's default options (the exact command is printed)
#            passthrough_ll  libfuse 3's low-level example passthrough (`passthrough_ll.c` as Debian's libfuse3-dev
#                            ships it in /usr/share/doc/libfuse3-dev/examples, libfuse 3.14 on Debian 12), built
#                            by this script into the scratch directory and mounted with `-o cache=never` (direct_io
#                            on every open, attr/entry timeouts 0: ferry's default), multi-threaded session loop,
#                            inode numbers instead of paths. The baseline for "what libfuse 3's low-level API
#                            costs" (issue 29). Started with setsid (a session of its own, as the ferry and
#                            bindfs daemons have). Mounted as root by libfuse 3 itself (mount(2)): fuse3's
#                            fusermount3 is not needed, and must not be installed on Debian 12 (it replaces the
#                            `fuse` package whose fusermount ferry and bindfs use).
#            passthrough_ll-nodirect  the same example with one change made by this script at build time: O_DIRECT
#                            dropped from the flags it opens backing files with (as bindfs, and ferry until issue 29's
#                            step 8, do). Not in the default set: for FERRY_BENCH_DIRECT=1 runs, where the example as
#                            shipped fails every O_DIRECT write with EINVAL (it writes from libfuse's receive buffer,
#                            whose payload is not page-aligned) and is skipped.
#            ferry-js        `ferry mount` with dirty tracking, on the JavaScript data path (FERRY_NATIVE=0)
#            ferry           `ferry mount` with dirty tracking (default 64K blocks, 128K read-around), native data path
#            ferry-notrack   `ferry mount --no-track`, native data path
#            ferry-direct-io `ferry mount --direct-io`, native data path: every open direct_io (the default before
#                            issue 29's step 5; today's default uses the page cache for opens without O_DIRECT)
#            ferry-noreadaround  `ferry mount --read-around 0`, native data path (not in the default set: a reader
#                            for like-for-like comparisons with passthroughs that read only what is asked)
#            ferry-metrics   `ferry mount --metrics`, native data path, scraped every 100 ms (scripts/bench/scrape.mjs;
#                            not in the default set: side by side with ferry, what serving metrics costs)
#            ferry-before    `ferry mount` of another built checkout (FERRY_BENCH_BEFORE), native data path: a
#                            change side by side with the build before it
#   jobs     cold (page cache dropped before each run): seq write/read 1M (MB/s); 4K randwrite/randread with 1 and
#            with 16 requests in flight (IOPS, p50/p99 completion latency). psync everywhere; "16 in flight" is
#            numjobs=16 on one file. Every job runs FERRY_BENCH_RUNTIME seconds, looping over the file, except
#            "one pass", which reads the file once: fio's loop invalidates the file's pages in the mount only, so
#            a target that caches the backing file too (bindfs) rereads from that second cache after its first pass.
#            warm (buffered only; skipped with FERRY_BENCH_DIRECT=1, where no cache is read): caches dropped, the
#            file read once through the target with dd bs=1M, then at once the fio job with invalidate=0:
#            seq read 1M, randread 4K QD1, randread 4K numjobs=4.
#   rounds   FERRY_BENCH_ROUNDS rounds of every job on every target; within a round each job runs on every target
#            in turn, and the order of the targets rotates by one each round. The table shows medians (min–max).
#   memory   goal 2 of issue 29 ("one cache"): per target, caches dropped, a FERRY_BENCH_MEM_SIZE file read twice
#            through the target (dd bs=1M, buffered), then the growth of /proc/meminfo Cached (both copies: the
#            FUSE file's pages and the backing file's), the backing file's share of it (fincore on the backing
#            file) and the serving daemon's VmRSS, in MiB; the figure compared is Cached growth + RSS. fincore
#            cannot look at the file through the mount: its open drops the FUSE inode's pages unless the server
#            answers keep_cache. Cached is machine-wide: a quiet machine only.
#
# Usage (as root; needs fio, bindfs, fusermount, fincore, cc, pkg-config, libfuse3-dev and a built dist/, i.e.
# after scripts/setup.sh):
#   npm run bench:io                            # or: bash scripts/bench/io.sh
#   FERRY_BENCH_TMPFS=1 npm run bench:io         # backing store on a tmpfs: FUSE overhead stands out
#   FERRY_BENCH_DIRECT=1 npm run bench:io        # O_DIRECT (direct=1) instead of buffered I/O (no warm rows)
# Environment:
#   FERRY_BENCH_DIR       parent of the scratch directory (default /var/tmp; the root disk, not a tmpfs)
#   FERRY_BENCH_TMPFS=1   mount a tmpfs inside the scratch directory and keep the backing files there
#   FERRY_BENCH_DIRECT=1  direct=1 (checked on every target first; a target without O_DIRECT is skipped)
#   FERRY_BENCH_RUNTIME   seconds per fio job (default 10; 9 jobs x 7 targets x 3 rounds: about 45 minutes)
#   FERRY_BENCH_ROUNDS    rounds (default 3; the table shows the median and the range of the rounds)
#   FERRY_BENCH_SIZE      file size per target (default 1G; fio/numfmt suffixes K M G)
#   FERRY_BENCH_MEM_SIZE  file size of the memory figure (default 1G, as issue 29 asks; 0: no memory figure)
#   FERRY_BENCH_QD_ENGINE psync (default: numjobs=16) or libaio (iodepth=16; only async with direct=1)
#   FERRY_BENCH_TARGETS   subset or extra, e.g. "bindfs ferry"
#                         (default: native bindfs passthrough_ll ferry-js ferry ferry-notrack ferry-direct-io)
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
rounds=${FERRY_BENCH_ROUNDS:-3}
size_arg=${FERRY_BENCH_SIZE:-1G}
mem_arg=${FERRY_BENCH_MEM_SIZE:-1G}
direct=${FERRY_BENCH_DIRECT:-0}
use_tmpfs=${FERRY_BENCH_TMPFS:-0}
base=${FERRY_BENCH_DIR:-/var/tmp}
qd_engine=${FERRY_BENCH_QD_ENGINE:-psync}
before=${FERRY_BENCH_BEFORE:-}
default_targets="native bindfs passthrough_ll ferry-js ferry ferry-notrack ferry-direct-io${before:+ ferry-before}"
targets=(${FERRY_BENCH_TARGETS:-$default_targets})
keep=${FERRY_BENCH_KEEP:-0}

die() { echo "bench: $*" >&2; exit 2; }
note() { echo "bench: $*" >&2; }

# ---- preflight ------------------------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || die "run as root (drop_caches, tmpfs, fusectl)"
for cmd in fio bindfs fusermount node findmnt numfmt timeout fincore; do
  command -v "$cmd" >/dev/null || die "$cmd is missing (scripts/setup.sh installs it)"
done
[ -f "$cli" ] || die "$cli is missing: build first (npm run build, or scripts/setup.sh)"
[[ $runtime =~ ^[1-9][0-9]*$ ]] || die "FERRY_BENCH_RUNTIME must be a whole number of seconds, not '$runtime'"
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "FERRY_BENCH_ROUNDS must be a whole number, at least 1, not '$rounds'"
[[ $direct =~ ^[01]$ ]] || die "FERRY_BENCH_DIRECT must be 0 or 1"
[[ $use_tmpfs =~ ^[01]$ ]] || die "FERRY_BENCH_TMPFS must be 0 or 1"
case $qd_engine in psync | libaio) ;; *) die "FERRY_BENCH_QD_ENGINE must be psync or libaio" ;; esac
size=$(numfmt --from=iec "${size_arg^^}" 2>/dev/null) || die "FERRY_BENCH_SIZE '$size_arg' is not a size"
((size >= 16 << 20 && size % (1 << 20) == 0)) || die "FERRY_BENCH_SIZE must be a whole number of MiB, at least 16M"
if [ "$mem_arg" = 0 ]; then mem_size=0; else
  mem_size=$(numfmt --from=iec "${mem_arg^^}" 2>/dev/null) || die "FERRY_BENCH_MEM_SIZE '$mem_arg' is not a size"
  ((mem_size >= 1 << 20 && mem_size % (1 << 20) == 0)) || die "FERRY_BENCH_MEM_SIZE must be 0 or a whole number of MiB"
fi
for t in "${targets[@]}"; do
  case $t in native | bindfs | passthrough_ll | passthrough_ll-nodirect | ferry-js | ferry | ferry-notrack | ferry-direct-io | ferry-noreadaround | ferry-metrics | ferry-before) ;;
    *) die "unknown target '$t'" ;;
  esac
  if [ "$t" = ferry-before ]; then
    [ -f "$before/dist/cli/main.js" ] || die "FERRY_BENCH_BEFORE: $before/dist/cli/main.js is missing (run scripts/setup.sh there)"
  fi
done
[ -d "$base" ] || die "FERRY_BENCH_DIR $base is not a directory"
[[ $base != *[[:space:]]* ]] || die "FERRY_BENCH_DIR must not contain whitespace"
grep -q '^fuse ' /proc/modules 2>/dev/null || [ -e /dev/fuse ] || modprobe fuse 2>/dev/null || true
[ -e /dev/fuse ] || die "/dev/fuse is missing"

# passthrough_ll's source: Debian's libfuse3-dev ships it (plain or gzipped) with passthrough_helpers.h.
pll_examples=/usr/share/doc/libfuse3-dev/examples
if [[ " ${targets[*]} " == *" passthrough_ll"* ]]; then
  for cmd in cc pkg-config; do command -v "$cmd" >/dev/null || die "$cmd is missing (scripts/setup.sh installs it)"; done
  pkg-config --exists fuse3 || die "libfuse3-dev is missing (scripts/setup.sh installs it; not fuse3, which removes fuse)"
  for f in passthrough_ll.c passthrough_helpers.h; do
    [ -f "$pll_examples/$f" ] || [ -f "$pll_examples/$f.gz" ] ||
      die "$pll_examples/$f is missing (libfuse3-dev installed with /usr/share/doc excluded? reinstall it with docs)"
  done
fi

need=$((${#targets[@]} * (size + mem_size) + (256 << 20)))
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
  local limit=$1 rc=0
  shift
  if [ "$1" = --stderr ]; then
    # The child's stderr only: a trap running meanwhile must still print to ours.
    timeout -k 10 "$limit" "${@:3}" 2>"$2" &
  else
    # Inherited, not 2>/dev/stderr: that reopens our stderr, and when it is a file, truncates it (the lines
    # written so far became NUL bytes in a `bash io.sh 2>log`).
    timeout -k 10 "$limit" "$@" &
  fi
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
    passthrough_ll) kind_of[$t]=passthrough label_of[$t]="passthrough_ll (libfuse $(pkg-config --modversion fuse3), cache=never)" ;;
    passthrough_ll-nodirect) kind_of[$t]=passthrough label_of[$t]="passthrough_ll, O_DIRECT not forwarded" ;;
    ferry-js) kind_of[$t]=ferry label_of[$t]="ferry JS path" ;;
    ferry) kind_of[$t]=ferry label_of[$t]="ferry native" ;;
    ferry-notrack) kind_of[$t]=ferry label_of[$t]="ferry native --no-track" ;;
    ferry-direct-io) kind_of[$t]=ferry label_of[$t]="ferry native --direct-io" ;;
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
  if ((mem_size)); then
    run_bounded 600 fio --name=layout --filename="$store/$t/mem.dat" --rw=write --bs=1M --size="$mem_size" \
      --ioengine=psync --end_fsync=1 --output=/dev/null ||
      die "laying out $store/$t/mem.dat failed"
  fi
done

pll_cmds=()
if [[ " ${targets[*]} " == *" passthrough_ll"* ]]; then # built here, from the packaged example, every run
  mkdir -p "$scratch/pll"
  for f in passthrough_ll.c passthrough_helpers.h; do
    if [ -f "$pll_examples/$f" ]; then cp "$pll_examples/$f" "$scratch/pll/"; else zcat "$pll_examples/$f.gz" >"$scratch/pll/$f"; fi
  done
  # The -nodirect variant: O_DIRECT dropped from both opens of a backing file (lo_create, lo_open), nothing else.
  sed '/fi->flags/s/& ~O_NOFOLLOW/\& ~(O_NOFOLLOW | O_DIRECT)/' "$scratch/pll/passthrough_ll.c" >"$scratch/pll/passthrough_ll-nodirect.c"
  [ "$(grep -c 'O_NOFOLLOW | O_DIRECT' "$scratch/pll/passthrough_ll-nodirect.c")" = 2 ] ||
    die "passthrough_ll.c changed: the -nodirect edit (two opens with fi->flags & ~O_NOFOLLOW) no longer applies"
  for t in "${targets[@]}"; do
    [ "${kind_of[$t]}" = passthrough ] || continue
    # shellcheck disable=SC2046 # pkg-config prints word lists
    cc -O2 -Wall -o "$scratch/pll/$t" "$scratch/pll/$t.c" $(pkg-config fuse3 --cflags --libs) 2>"$scratch/pll/cc.log" ||
      { cat "$scratch/pll/cc.log" >&2; die "building $t failed"; }
  done
fi

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
    passthrough_ll | passthrough_ll-nodirect)
      # -f: in the foreground of a background job, so its pid is ours to end; no -s: the multi-threaded loop.
      # setsid: a session (and scheduler autogroup) of its own, as the ferry and bindfs daemons have; fio's
      # autogroup is the script's. setsid execs in place here (a background job is no process-group leader).
      pll_cmds+=("setsid $t -f -o source=$store/$t,cache=never $m")
      mounted+=("$t")
      setsid "$scratch/pll/$t" -f -o "source=$store/$t,cache=never" "$m" >"$scratch/pll/$t.log" 2>&1 &
      daemon_pid[$t]=$!
      for _ in $(seq 100); do is_mounted "$m" && break; kill -0 "${daemon_pid[$t]}" 2>/dev/null || break; sleep 0.1; done
      is_mounted "$m" || { cat "$scratch/pll/$t.log" >&2; die "$t mount failed"; }
      [ "$(cat "/proc/${daemon_pid[$t]}/comm" 2>/dev/null)" = "${t:0:15}" ] ||
        daemon_pid[$t]=$(pid_of_cmdline "$scratch/pll/$t" -f -o "source=$store/$t,cache=never" "$m") ||
        note "cannot find the $t process"
      ;;
    ferry-js | ferry | ferry-notrack | ferry-direct-io | ferry-noreadaround | ferry-metrics | ferry-before)
      args=(mount "$store/$t" "$m" --state-dir "$state")
      [ "$t" = ferry-notrack ] && args+=(--no-track)
      [ "$t" = ferry-direct-io ] && args+=(--direct-io)
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
# id | label | warm (1: the file read once through the target right before fio, no drop_caches between) | fio args
jobs=(
  "seqwrite|seq write 1M, MB/s|0|--rw=write --bs=1M --numjobs=1"
  "seqread|seq read 1M, MB/s|0|--rw=read --bs=1M --numjobs=1"
  "seqread1|seq read 1M, one pass, MB/s|0|--rw=read --bs=1M --numjobs=1 --time_based=0 --loops=1"
  "randwrite1|randwrite 4K QD1, IOPS (p50/p99 µs)|0|--rw=randwrite --bs=4k --numjobs=1"
  "randread1|randread 4K QD1, IOPS (p50/p99 µs)|0|--rw=randread --bs=4k --numjobs=1"
)
if [ "$qd_engine" = psync ]; then
  qd16="--numjobs=16"
  qd16_desc="psync numjobs=16 (16 threads on one file)"
else
  qd16="--numjobs=1 --ioengine=libaio --iodepth=16"
  qd16_desc="libaio iodepth=16"
fi
jobs+=(
  "randwrite16|randwrite 4K 16 in flight, IOPS (p50/p99 µs)|0|--rw=randwrite --bs=4k $qd16"
  "randread16|randread 4K 16 in flight, IOPS (p50/p99 µs)|0|--rw=randread --bs=4k $qd16"
)
if [ "$direct" = 0 ]; then # with direct=1 nothing reads a cache: the warm rows would repeat the cold ones
  jobs+=(
    "warmseqread|warm seq read 1M, MB/s|1|--rw=read --bs=1M --numjobs=1"
    "warmrandread1|warm randread 4K QD1, IOPS (p50/p99 µs)|1|--rw=randread --bs=4k --numjobs=1"
    "warmrandread4|warm randread 4K 4 jobs, IOPS (p50/p99 µs)|1|--rw=randread --bs=4k --numjobs=4"
  )
fi
common="--ioengine=psync --direct=$direct --size=$size --time_based --runtime=$runtime --group_reporting"
# iomem_align: page-aligned buffers, as qemu uses. fio's default buffered-I/O buffer starts 16 bytes into a page,
# which makes every 1M read or write through FUSE direct_io 9 requests (one of them 16 bytes) instead of 8.
common+=" --iomem_align=4096 --lat_percentiles=1 --allow_file_create=0 --fallocate=none --randrepeat=1"
common+=" --thread"
# invalidate=1 (cold jobs) drops the file's cached pages at open; a warm job must keep them: invalidate=0.
invalidate_of() { echo "--invalidate=$((1 - $1))"; }

# The plan the table is built from.
{
  printf '{"direct":%s,"qd16":"%s","rounds":%s,"memSize":%s,"targets":[' "$direct" "$qd16_desc" "$rounds" "$mem_size"
  sep=""
  for t in "${targets[@]}"; do
    printf '%s{"id":"%s","label":"%s","skip":"%s"}' "$sep" "$t" "${label_of[$t]}" "${skip_reason[$t]:-}"
    sep=","
  done
  printf '],"jobs":['
  sep=""
  for j in "${jobs[@]}"; do
    IFS='|' read -r id label warm _ <<<"$j"
    printf '%s{"id":"%s","label":"%s","warm":%s}' "$sep" "$id" "$label" "$warm"
    sep=","
  done
  printf ']}\n'
} >"$results/plan.json"

ferry_status() { # <target> <out file>
  timeout -k 5 20 node "$cli" status "${mnt_of[$1]}" --json --state-dir "$state" >"$2" 2>/dev/null || rm -f "$2"
}

declare -A hung=()
mark_hung() { # <target> <out base> <why>
  echo "$3" >"$2.error"
  hung[$1]=1
  abort_connection "${mnt_of[$1]}"
  failures=$((failures + 1))
}
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
ntargets=${#targets[@]}
for ((round = 1; round <= rounds; round++)); do
  order=() # rotated by one each round, so no target always runs first (or right after the same neighbour)
  for ((i = 0; i < ntargets; i++)); do order+=("${targets[(i + round - 1) % ntargets]}"); done
  note "round $round of $rounds: ${order[*]}"
  for j in "${jobs[@]}"; do
    IFS='|' read -r id label warm args <<<"$j"
    for t in "${order[@]}"; do
      [ -z "${skip_reason[$t]:-}" ] || continue
      out="$results/$id.$t.r$round"
      if [ -n "${hung[$t]:-}" ]; then echo "target hung earlier" >"$out.error"; continue; fi
      note "$(printf 'r%-3s %-14s %-16s' "$round" "$id" "${label_of[$t]}") (t+$((SECONDS - started))s)"
      drop_caches
      if [ "$warm" = 1 ]; then # one buffered read of the whole file through the target: the cache fio finds
        rc=0
        run_bounded 600 --stderr "$out.stderr" dd if="${file_of[$t]}" of=/dev/null bs=1M status=none || rc=$?
        if ((rc == 124 || rc == 137)); then mark_hung "$t" "$out" "warming read timed out: the mount hung"; continue; fi
        if ((rc != 0)); then
          { echo "warming read: dd exit $rc"; tail -3 "$out.stderr"; } >"$out.error"
          failures=$((failures + 1))
          continue
        fi
      fi
      [ "${kind_of[$t]}" = ferry ] && ferry_status "$t" "$out.before.json"
      rc=0
      # shellcheck disable=SC2086 # $common and $args are word lists
      run_bounded $((runtime * 2 + 60)) --stderr "$out.stderr" fio --name="$id" --filename="${file_of[$t]}" $common \
        $(invalidate_of "$warm") $args --output-format=json --output="$out.json" || rc=$?
      if ((rc == 124 || rc == 137)); then
        mark_hung "$t" "$out" "fio timed out: the mount hung"
        continue
      elif ((rc != 0)); then
        { echo "fio exit $rc"; tail -3 "$out.stderr"; } >"$out.error"
        failures=$((failures + 1))
      fi
      [ "${kind_of[$t]}" = ferry ] && ferry_status "$t" "$out.after.json"
    done
  done
done

# ---- memory figure (issue 29, goal 2: one cache) --------------------------------------------------------
resident() { # <file>: bytes of it in the page cache (fincore), or "error: ..."
  local out
  if out=$(timeout -s KILL 60 fincore --bytes --noheadings --output RES "$1" 2>&1); then echo "${out//[[:space:]]/}"
  else out=${out##*: } && echo "error: ${out//\"/}" | head -1; fi
}
if ((mem_size)); then
  for t in "${targets[@]}"; do
    out="$results/mem.$t"
    m=${mnt_of[$t]}
    if [ -n "${hung[$t]:-}" ]; then echo "target hung earlier" >"$out.error"; continue; fi
    note "memory: $(printf '%-16s' "${label_of[$t]}") read $(numfmt --to=iec "$mem_size") twice (t+$((SECONDS - started))s)"
    drop_caches
    cached0=$(awk '/^Cached:/ { print $2 }' /proc/meminfo)
    rc=0
    for pass in 1 2; do
      run_bounded 600 --stderr "$out.stderr" dd if="$m/mem.dat" of=/dev/null bs=1M status=none || rc=$?
      ((rc == 0)) || break
    done
    if ((rc == 124 || rc == 137)); then mark_hung "$t" "$out" "read timed out: the mount hung"; continue; fi
    if ((rc != 0)); then
      { echo "dd exit $rc"; tail -3 "$out.stderr"; } >"$out.error"
      failures=$((failures + 1))
      continue
    fi
    cached1=$(awk '/^Cached:/ { print $2 }' /proc/meminfo)
    # Not fincore through the mount: opening the file there drops its FUSE pages (no keep_cache).
    backing=$(resident "$store/$t/mem.dat")
    rss=""
    pid=${daemon_pid[$t]:-}
    [ -z "$pid" ] || rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
    printf '{"backing":"%s","cachedDeltaKb":%s,"rssKb":"%s"}\n' "$backing" $((cached1 - cached0)) "$rss" >"$out.json"
  done
fi

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
echo "- I/O: $([ "$direct" = 1 ] && echo 'O_DIRECT (direct=1): no warm rows (nothing reads a cache)' || echo 'buffered (direct=0)'); 16 in flight = $qd16_desc; one $(numfmt --to=iec "$size") file per target, laid out beforehand"
echo "- rounds: $rounds; within a round every job runs on every target in turn, the targets' order rotating by one each round"
[ -z "$bindfs_cmd" ] || echo "- bindfs: \`$bindfs_cmd\` (default options: single-threaded, O_DIRECT not forwarded, xattrs mirrored)"
for c in "${pll_cmds[@]}"; do
  echo "- passthrough_ll: \`$c\`, built from $pll_examples/passthrough_ll.c (libfuse3-dev $(dpkg-query -W -f '${Version}' libfuse3-dev 2>/dev/null)) with \`cc -O2 -Wall ... \$(pkg-config fuse3 --cflags --libs)\` (multi-threaded loop, direct_io on every open, timeouts 0)$([[ $c == *-nodirect* ]] && echo '; -nodirect: O_DIRECT dropped from its two backing opens')"
done
for c in "${ferry_cmds[@]}"; do echo "- ferry: \`$c\`"; done
echo "- fio, per job and target (caches dropped before each run; warm jobs: then \`dd if=<target>/bench.dat of=/dev/null bs=1M\` first):"
echo '  ```'
for j in "${jobs[@]}"; do
  IFS='|' read -r id label warm args <<<"$j"
  echo "  fio --name=$id --filename=<target>/bench.dat $common $(invalidate_of "$warm") $args --output-format=json"
done
echo '  ```'
echo
node "$here/fio-table.mjs" "$results"
if ((failures)); then
  echo
  echo "bench: $failures run(s) failed" >&2
  exit 1
fi
