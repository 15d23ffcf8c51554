#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The PKU lane: runs the test suite against the x86-pku backend by booting
# Debian kernels under QEMU's TCG emulator with -cpu max (which emulates
# PKU) and an initramfs of busybox-static plus the statically linked tests.
# Each kernel series boots in turn (6.1, Debian 12's own, and 6.12, whose
# signal delivery handles PKRU differently) and runs the whole suite.
# Fails when a test fails, the guest lacks PKU, or it does not finish in
# time. Timings under TCG mean nothing; only correctness counts here.
#
# Prints one line per test program and kernel (a program whose tests all
# skipped exits 77: SKIP, not a failure); the guest consoles are kept
# in BUILD_DIR/logs/console-KERNEL.log, escape sequences stripped. On a
# failure it prints the failing program's part of the console.
#
# With --icount it runs the instruction-count benchmarks instead of the
# tests (bench/icount_*.cpp): each kernel boots once with -icount shift=0
# -smp 1, where guest time advances one nanosecond per executed guest
# instruction, so the benchmarks' clock readings are instruction counts
# (kernel instructions included). It prints a table per kernel (operation,
# instructions per operation), with the QEMU and kernel versions, and keeps
# the benchmarks' lines in BUILD_DIR/logs/icount-KERNEL.txt for comparing
# runs (with ICOUNT-BATCHES lines: every timed batch). Figures repeat
# from boot to boot within 0.1%, most of them exactly.
#
# usage: scripts/pku-lane.sh [--icount] [BUILD_DIR]   (default: build-pku-lane)
# env:   PKEYS_LANE_SERIES   Debian kernel series to boot (default "6.1 6.12"),
#                            the newest linux-image-SERIES*-amd64 of each,
#                            downloaded by package name and cached in BUILD_DIR
#        PKEYS_LANE_KERNEL   vmlinuz file(s), space-separated, to boot instead
#        PKEYS_LANE_TIMEOUT  seconds for each guest (default 600; a run takes
#                            about a minute)
#        PKEYS_LANE_PROGRAM_TIMEOUT  seconds for each test program in the
#                            guest (default 300): a hang fails that program only
#        PKEYS_SYNC_TIMEOUT_MS  the cross-thread handshake's bound in the
#                            guest (default 20000: TCG is slow)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
mode=tests
if [[ ${1:-} == --icount ]]; then mode=icount; shift; fi
build=${1:-$root/build-pku-lane}
timeout_s=${PKEYS_LANE_TIMEOUT:-600}
sync_ms=${PKEYS_SYNC_TIMEOUT_MS:-20000}
program_s=${PKEYS_LANE_PROGRAM_TIMEOUT:-300}
mkdir -p "$build/logs"
build=$(cd "$build" && pwd)
logs=$build/logs

log() { printf 'pku-lane: %s\n' "$*"; }
# A path as the user typed it from the project root, for messages.
show() { local p=$1; [[ $p == "$root"/* ]] && p=${p#"$root"/}; printf '%s' "$p"; }

# --- the statically linked tests ---------------------------------------------
programs=(pkeys_conformance pkeys_concurrency pkeys_backend_selection pkeys_vkeys_stress
          pkeys_startup pkeys_allocator_reentry tagged_sleeper pkeyctl)
# The instruction-count benchmarks: two static programs, one linked with
# libpkeys.so and glibc's peer of it linked with libc.so (their loader and
# libraries go into the initramfs).
icount_programs=(pkeys_icount_bench pkeys_icount_glibc pkeys_icount_plt pkeys_icount_glibc_plt)
build_log=$logs/build.log
configure_extra=() build_extra=()  # none for the tests
if [[ $mode == icount ]]; then
  log "building the instruction-count benchmarks (log: $(show "$build_log"))"
  configure_extra=(-DPKEYS_BUILD_ICOUNT_BENCH=ON)
  build_extra=(--target "${icount_programs[@]}")
else
  log "building the static tests (log: $(show "$build_log"))"
fi
if ! { cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPKEYS_STATIC_TESTS=ON \
         -DPKEYS_BUILD_TESTS=ON -DPKEYS_BUILD_BENCH=OFF -DPKEYS_WERROR=ON "${configure_extra[@]}" &&
       cmake --build "$build" -j"$(nproc)" "${build_extra[@]}"; } >"$build_log" 2>&1; then
  log "FAIL: the build failed; the end of $(show "$build_log"):"
  tail -n 60 "$build_log"
  exit 1
fi

# --- the kernels: Debian's, downloaded by package name and unpacked ----------
# The newest linux-image-SERIES.N-amd64 (6.1.0-N-amd64, 6.12.N+debN-amd64):
# not -rt, -cloud or -dbg.
fetch_kernel() {  # fetch_kernel SERIES: prints the vmlinuz path (messages on stderr)
  local series=$1 kdir=$build/kernel-$1 pattern pkg found
  found=("$kdir"/boot/vmlinuz-*)
  if [[ -f ${found[0]} ]]; then printf '%s\n' "${found[0]}"; return; fi
  pattern="^linux-image-${series//./\\.}(\\.0-[0-9]+|\\.[0-9]+\\+deb[0-9]+)-amd64\$"
  pkg=$(apt-cache search --names-only "$pattern" | awk '{print $1}' | sort -V | tail -n1)
  if [[ -z $pkg ]]; then
    apt-get update -qq >/dev/null
    pkg=$(apt-cache search --names-only "$pattern" | awk '{print $1}' | sort -V | tail -n1)
  fi
  [[ -n $pkg ]] || { log "no package matches $pattern" >&2; return 1; }
  log "downloading $pkg (log: $(show "$logs/download.log"))" >&2
  rm -rf "$kdir"
  mkdir -p "$kdir/deb"
  # (apt warns that root downloads unsandboxed: into the log with the rest)
  (cd "$kdir/deb" && apt-get download "$pkg") >"$logs/download.log" 2>&1 ||
    { log "apt-get download $pkg failed:" >&2; cat "$logs/download.log" >&2; return 1; }
  dpkg -x "$kdir"/deb/*.deb "$kdir"
  rm -rf "${kdir:?}/deb" "${kdir:?}/lib" "${kdir:?}/usr" "${kdir:?}/etc"
  found=("$kdir"/boot/vmlinuz-*)
  [[ -f ${found[0]} ]] || { log "$pkg holds no /boot/vmlinuz-*" >&2; return 1; }
  printf '%s\n' "${found[0]}"
}

kernels=()
if [[ -n ${PKEYS_LANE_KERNEL:-} ]]; then
  read -r -a kernels <<<"$PKEYS_LANE_KERNEL"
else
  for series in ${PKEYS_LANE_SERIES:-6.1 6.12}; do
    k=$(fetch_kernel "$series") || exit 1
    kernels+=("$k")
  done
fi
for k in "${kernels[@]}"; do [[ -f $k ]] || { log "FAIL: no kernel file $k"; exit 1; }; done

# The firmware's terminal resets, colours and line-wrap switches, and CRs.
clean_console() {  # clean_console RAW CONSOLE: removes RAW
  sed -E 's/\x1b\[[0-9;?]*[A-Za-z]//g; s/\x1b[()][A-Za-z0-9]//g; s/\x1b[A-Za-z=>]//g' "$1" |
    tr -d '\r' >"$2"
  rm -f "$1"
}

# An initramfs tree with busybox-static, and, once the programs are in, its
# /init and the archive the guest boots from.
start_initramfs() {  # start_initramfs DIR
  rm -rf "$1"
  mkdir -p "$1"/{bin,proc,sys,dev,tmp,tests}
  cp /bin/busybox "$1/bin/busybox"
  if ldd "$1/bin/busybox" >/dev/null 2>&1; then
    log "/bin/busybox is not statically linked: install busybox-static"; exit 1
  fi
}
# A dynamically linked program's loader and libraries, this machine's, where
# the loader looks without a cache: /lib/x86_64-linux-gnu.
copy_dynamic() {  # copy_dynamic DIR ELF...
  local dir=$1 elf interp lib
  shift
  mkdir -p "$dir/lib/x86_64-linux-gnu"
  for elf in "$@"; do
    interp=$(readelf -l "$elf" | sed -n 's/.*Requesting program interpreter: \(.*\)\]$/\1/p')
    if [[ -n $interp ]]; then
      mkdir -p "$dir$(dirname "$interp")"
      cp -L "$interp" "$dir$interp"
    elif ! readelf -d "$elf" | grep -q NEEDED; then
      log "$(show "$elf") is neither a dynamically linked program nor a shared library"; exit 1
    fi
    ldd "$elf" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' |
      while read -r lib; do cp -L "$lib" "$dir/lib/x86_64-linux-gnu/"; done
  done
}
finish_initramfs() {  # finish_initramfs DIR ARCHIVE
  cp "$root/scripts/pku-lane-init.sh" "$1/init"
  chmod +x "$1/init"
  (cd "$1" && find . | cpio -o -H newc --quiet | gzip -1) >"$2"
}

# What went wrong with a whole guest, if anything: it ran past the limit,
# stopped before the end, or had no PKU (the lane would test nothing).
guest_failure() {  # guest_failure CONSOLE QEMU_RC: prints the reason, or nothing
  if [[ $2 -eq 124 || $2 -eq 137 ]]; then
    echo "the guest did not finish within ${timeout_s}s"
  elif ! grep -q '^PKU-LANE-DONE' "$1"; then
    echo "the guest stopped before the end (qemu rc $2)"
  elif ! grep -aq 'PKU-LANE-CPU: .*pku' "$1" || ! grep -aq 'PKU-LANE-CPU: .*ospke' "$1"; then
    echo "the guest CPU lacks pku/ospke; the lane would not test the hardware backend"
  fi
}

# --- the instruction-count mode -------------------------------------------------
# A boot per kernel that runs only the benchmarks (init's PKEYS_LANE_MODE),
# on one vCPU with -icount shift=0: one nanosecond of guest time per guest
# instruction. (-icount rules out multi-threaded TCG.) sleep=off: an idle
# guest's clock jumps to its next timer instead of following the host's.
# nokaslr norandmaps: the same addresses in every boot, since the kernel's
# and the library's work depends a little on them.
if [[ $mode == icount ]]; then
  icount_dir=$build/initramfs-icount
  start_initramfs "$icount_dir"
  for p in "${icount_programs[@]}"; do
    strip --strip-debug -o "$icount_dir/tests/$p" "$build/bench/$p"
  done
  for p in pkeys_icount_bench pkeys_icount_glibc; do
    if ldd "$icount_dir/tests/$p" >/dev/null 2>&1; then log "$p is not statically linked"; exit 1; fi
  done
  copy_dynamic "$icount_dir" "$build/bench/pkeys_icount_plt" "$build/bench/pkeys_icount_glibc_plt"  # libpkeys.so.0 too
  finish_initramfs "$icount_dir" "$build/initramfs-icount.cpio.gz"

  qemu_flags=(-accel tcg -cpu max -smp 1 -icount 'shift=0,sleep=off')
  log "$(qemu-system-x86_64 --version | head -n1), ${qemu_flags[*]}, $(date -u '+%F %H:%M UTC')"
  status=0
  for kernel in "${kernels[@]}"; do
    name=$(basename "$kernel")
    name=${name#vmlinuz-}
    console=$logs/icount-console-$name.log
    log "booting $name under qemu-system-x86_64 ${qemu_flags[*]} (limit ${timeout_s}s; console: $(show "$console"))"
    start=$SECONDS
    set +e
    timeout --kill-after=10 "$timeout_s" qemu-system-x86_64 "${qemu_flags[@]}" -m 1024 \
      -nographic -no-reboot -kernel "$kernel" -initrd "$build/initramfs-icount.cpio.gz" \
      -append "console=ttyS0 panic=-1 quiet loglevel=3 nokaslr norandmaps PKEYS_LANE_MODE=icount PKEYS_SYNC_TIMEOUT_MS=$sync_ms PKEYS_LANE_PROGRAM_TIMEOUT=$program_s" \
      </dev/null >"$logs/icount-console-$name.raw" 2>&1
    qemu_rc=$?
    set -e
    clean_console "$logs/icount-console-$name.raw" "$console"
    took=$((SECONDS - start))
    uname=$(sed -n 's/^PKU-LANE-KERNEL: //p' "$console" | head -n1)
    figures=$logs/icount-$name.txt
    grep -a '^ICOUNT' "$console" >"$figures" || true
    echo "kernel ${uname:-$name}: instructions per operation (x86-pku backend; ${took}s)"
    awk '
      $1 == "ICOUNT" && $3 == "error" {
        printf "  %-52s error:", $2; for (i = 4; i <= NF; i++) printf " %s", $i; print ""; next }
      $1 == "ICOUNT" { printf "  %-52s %12s\n", $2, $3; next }
      $1 == "ICOUNT-RATIO" { printf "  %-52s %11sx\n", $2, $3; next }
      $1 == "ICOUNT-INFO" { info = info sprintf("  note: %s", $2); for (i = 3; i <= NF; i++) info = info " " $i; info = info "\n" }
      END { printf "%s", info }' "$figures"
    failed=""
    while read -r result; do
      rc=$(sed -n 's/.* rc=\([0-9]*\).*/\1/p' <<<"$result")
      [[ $rc == 0 ]] || failed="$failed ${result%% rc=*} (rc=$rc)"
    done < <(sed -n 's/^PKU-LANE-RESULT: //p' "$console")
    guest=$(guest_failure "$console" "$qemu_rc")
    if [[ -n $guest ]]; then
      failed="$failed $guest"
    elif grep -aq '^ICOUNT [^ ]* error' "$figures"; then
      failed="$failed a row failed"
    fi
    if [[ -n $failed ]]; then
      status=1
      log "FAIL on ${uname:-$name}:$failed; the end of $(show "$console"):"
      tail -n 40 "$console"
    fi
  done
  echo "instructions per operation: per call (pkey_set, key::set), per begin+end or enter+exit;"
  echo "a toggle is 2 mprotect calls; per_parked_thread = (3_parked - 0_threads) / 3; cross-thread"
  echo "rows are the cheapest interleaving that recurs, SCHED_FIFO ones the only one (bench/icount_bench.cpp)"
  exit $status
fi

# --- the initramfs ---------------------------------------------------------
initrd_dir=$build/initramfs
start_initramfs "$initrd_dir"
for p in "${programs[@]}"; do
  src=$build/tests/$p
  [[ $p == pkeyctl ]] && src=$build/tools/pkeyctl/pkeyctl
  # Without debug information: a fifth of the size, a faster boot.
  strip --strip-debug -o "$initrd_dir/tests/$p" "$src"
  if ldd "$initrd_dir/tests/$p" >/dev/null 2>&1; then log "$p is not statically linked"; exit 1; fi
done
# pkeyctl run --execute-only: its preload library where the static pkeyctl
# in /tests looks for it when installed (../lib), the probe and the library
# it dlopens, and real Debian programs, with their loader and libraries.
mkdir -p "$initrd_dir/usr/bin" "$initrd_dir/lib"
cp "$build/src/xom/libpkeys_xom.so" "$initrd_dir/lib/"
strip --strip-debug -o "$initrd_dir/tests/xom_probe" "$build/tests/xom_probe"
strip --strip-debug -o "$initrd_dir/tests/libxom_plugin.so" "$build/tests/libxom_plugin.so"
xom_real_programs=(/usr/bin/env /usr/bin/ls /usr/bin/sha256sum /usr/bin/openssl)
for p in "${xom_real_programs[@]}"; do cp -L "$p" "$initrd_dir$p"; done
copy_dynamic "$initrd_dir" "$build/tests/xom_probe" "$build/tests/libxom_plugin.so" "$build/src/xom/libpkeys_xom.so" \
  "${xom_real_programs[@]}"
finish_initramfs "$initrd_dir" "$build/initramfs.cpio.gz"

# --- boot each kernel ---------------------------------------------------------
# The lines between "PKU-LANE-RUN: NAME" and its result.
section() {  # section CONSOLE NAME
  awk -v run="PKU-LANE-RUN: $2" -v res="PKU-LANE-RESULT: $2 " \
    '$0 == run { on = 1; next } on && index($0, res) == 1 { exit } on' "$1"
}
# A failed program's output: each failed test case in full, then the end.
excerpt() {  # excerpt CONSOLE NAME
  local lines
  lines=$(section "$1" "$2" | wc -l)
  if ((lines <= 120)); then section "$1" "$2"; return; fi
  section "$1" "$2" | awk '
    /^\[ RUN      \]/ { buf = ""; on = 1 }
    on { buf = buf $0 "\n" }
    /^\[       OK \]/ { on = 0 }
    /^\[  FAILED  \] .*\(/ { if (on) printf "%s", buf; on = 0 }'
  echo "[... the last 30 of $lines lines ...]"
  section "$1" "$2" | tail -n 30
}

# Each kernel boots on -cpu max; the last boots once more on a CPU without
# BMI1 (no ANDN or BEXTR; nor BMI2, which glibc's string functions take
# to imply it): there the C ABI's inline pkey_set and pkey_get
# may not run, and every call takes the checked path, whose own switch is
# tested by a part of the conformance suite (init's PKEYS_LANE_MODE=nobmi1).
boot_kernels=("${kernels[@]}" "${kernels[-1]}")
boot_cpus=() boot_modes=()
for k in "${kernels[@]}"; do boot_cpus+=(max) boot_modes+=(""); done
boot_cpus+=(max,bmi1=off,bmi2=off) boot_modes+=(nobmi1)
status=0
summary=()
for boot in "${!boot_kernels[@]}"; do
  kernel=${boot_kernels[$boot]} cpu=${boot_cpus[$boot]} mode=${boot_modes[$boot]}
  name=$(basename "$kernel")
  name=${name#vmlinuz-}${mode:+-$mode}
  raw=$logs/console-$name.raw
  console=$logs/console-$name.log
  log "booting $name under qemu-system-x86_64 -accel tcg -cpu $cpu (limit ${timeout_s}s; console: $(show "$console"))"
  start=$SECONDS
  # Multi-threaded TCG now and then crashes a kernel while it patches its
  # own text during boot (seen once in 20 boots of 6.12: an int3 oops in
  # the idle loop), before /init runs. Such a boot tested nothing of
  # pkeys: it is said, its console kept, and the kernel booted once more.
  # A guest that reached /init is never booted again.
  for attempt in 1 2; do
    set +e
    timeout --kill-after=10 "$timeout_s" qemu-system-x86_64 -accel tcg -cpu "$cpu" -smp 2 -m 1024 \
      -nographic -no-reboot -kernel "$kernel" -initrd "$build/initramfs.cpio.gz" \
      -append "console=ttyS0 panic=-1 quiet loglevel=3 PKEYS_SYNC_TIMEOUT_MS=$sync_ms PKEYS_LANE_PROGRAM_TIMEOUT=$program_s${mode:+ PKEYS_LANE_MODE=$mode}" \
      </dev/null >"$raw" 2>&1
    qemu_rc=$?
    set -e
    clean_console "$raw" "$console"
    grep -aq '^PKU-LANE-CPU:' "$console" && break
    [[ $attempt == 2 ]] && break
    mv "$console" "$logs/console-$name.boot-failure.log"
    log "$name crashed before /init ran (qemu rc $qemu_rc; console: $(show "$logs/console-$name.boot-failure.log")); booting it once more"
  done
  took=$((SECONDS - start))

  uname=$(sed -n 's/^PKU-LANE-KERNEL: //p' "$console" | head -n1)
  failed=()
  ran=0 passed=0 skipped=0
  while read -r prog; do
    ran=$((ran + 1))
    result=$(grep -a -m1 "^PKU-LANE-RESULT: $prog " "$console" || true)
    rc=$(sed -n 's/.* rc=\([0-9]*\).*/\1/p' <<<"$result")
    time=$(sed -n 's/.* time=\([0-9]*s\).*/\1/p' <<<"$result")
    if [[ $rc == 0 ]]; then
      passed=$((passed + 1))
      printf '  PASS %-28s %s\n' "$prog" "$time"
    elif [[ $rc == 77 ]]; then
      # Every test in it skipped (the tests' main exits 77): not a failure,
      # but said as what it is.
      passed=$((passed + 1)) skipped=$((skipped + 1))
      printf '  SKIP %-28s %s (every test skipped)\n' "$prog" "$time"
    elif [[ -z $result ]]; then
      failed+=("$prog")
      printf '  FAIL %-28s (no result: the guest stopped)\n' "$prog"
    else
      failed+=("$prog")
      printf '  FAIL %-28s rc=%s %s%s\n' "$prog" "$rc" "$time" \
        "$([[ $rc == 137 ]] && echo " (SIGKILL: past the ${program_s}s limit, or out of memory)")"
    fi
  done < <(sed -n 's/^PKU-LANE-RUN: //p' "$console")

  verdict=$(guest_failure "$console" "$qemu_rc")
  if [[ -z $verdict ]] && ((ran == 0 || ${#failed[@]} > 0 || passed != ran)); then
    verdict="$passed of $ran test programs passed"
  fi
  skips=""
  if ((skipped > 0)); then skips=" ($skipped with every test skipped)"; fi
  line="kernel ${uname:-$name}${mode:+ (CPU without BMI1)}: $passed of $ran test programs passed$skips in ${took}s"
  if [[ -n $verdict ]]; then
    status=1
    summary+=("FAIL $line")
    log "FAIL on ${uname:-$name}: $verdict (console: $(show "$console"))"
    for prog in "${failed[@]}"; do
      log "--- $prog on ${uname:-$name}:"
      excerpt "$console" "$prog"
      log "--- end of $prog"
    done
    if ((${#failed[@]} == 0)); then tail -n 30 "$console"; fi
  else
    summary+=("ok   $line")
    log "OK: $line"
  fi
done

log "summary (x86-pku backend under QEMU TCG -cpu max):"
for l in "${summary[@]}"; do printf '  %s\n' "$l"; done
exit $status
