#!/bin/busybox sh
# SPDX-License-Identifier: MIT
# /init of the PKU lane's initramfs: runs each test program (or, with
# PKEYS_LANE_MODE=icount, each instruction-count benchmark), marks its
# output with PKU-LANE-RUN / PKU-LANE-RESULT lines on the serial console
# (scripts/pku-lane.sh reads them), then powers off.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
# The firmware's escape sequences end without a newline: start a fresh line.
echo
echo "PKU-LANE-CPU: $(grep -o -w -E 'pku|ospke' /proc/cpuinfo | sort -u | tr '\n' ' ')"
echo "PKU-LANE-KERNEL: $(uname -r)"

# The kernel hands unknown name=value boot parameters to init as
# environment: the host's settings arrive that way. TCG runs code tens of
# times slower than the host, so the cross-thread handshake gets a long
# bound; tests that check the bound itself scale theirs from it.
export PKEYS_SYNC_TIMEOUT_MS="${PKEYS_SYNC_TIMEOUT_MS:-20000}"
program_timeout="${PKEYS_LANE_PROGRAM_TIMEOUT:-300}"
echo "PKU-LANE-ENV: PKEYS_SYNC_TIMEOUT_MS=$PKEYS_SYNC_TIMEOUT_MS program timeout ${program_timeout}s"

run() {  # run NAME ENV... -- PROGRAM ARGS...
  name=$1; shift
  envs=""
  while [ "$1" != "--" ]; do envs="$envs $1"; shift; done
  shift
  echo "PKU-LANE-RUN: $name"
  start=$(date +%s)
  # shellcheck disable=SC2086 # $envs: NAME=VALUE words
  case $1 in
    ./*) env $envs timeout -s KILL "$program_timeout" "$@" 2>&1 ;;  # a hang costs one program, not the lane
    *) "$@" 2>&1 ;;  # a shell function
  esac
  rc=$?
  echo "PKU-LANE-RESULT: $name rc=$rc time=$(( $(date +%s) - start ))s"
}

cd /tests || { echo "PKU-LANE-RUN: initramfs"; echo "PKU-LANE-RESULT: initramfs rc=1 (no /tests)"; poweroff -f; }
export GTEST_COLOR=no
# PKEYS_LANE_MODE=icount (pku-lane.sh --icount): the instruction-count
# benchmarks alone, each printing ICOUNT lines; nothing else runs, so that
# the boot stays short.
if [ "${PKEYS_LANE_MODE:-}" = icount ]; then
  echo "ICOUNT-INFO kernel:clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
  run icount-glibc -- ./pkeys_icount_glibc
  run icount-libpkeys.a PKEYS_BACKEND=x86-pku -- ./pkeys_icount_bench
  run icount-libpkeys.so PKEYS_BACKEND=x86-pku -- ./pkeys_icount_plt
  run icount-glibc.so -- ./pkeys_icount_glibc_plt
  echo "PKU-LANE-DONE"
  poweroff -f
fi
# PKEYS_LANE_MODE=nobmi1 (a boot on -cpu max,bmi1=off,bmi2=off): the x86-pku backend
# without the C ABI's inline pkey_set and pkey_get (they need ANDN and
# BEXTR), every call through the checked path: the tests of rights, frees,
# signals and jumps.
if [ "${PKEYS_LANE_MODE:-}" = nobmi1 ]; then
  cpu_lacks_bmi1() { ! grep -qw bmi1 /proc/cpuinfo; }
  run cpu-without-bmi1 -- cpu_lacks_bmi1
  run conformance-x86-pku-no-bmi1 PKEYS_BACKEND=x86-pku -- ./pkeys_conformance \
    '--gtest_filter=Alloc.*:Free.*:Errno.*:SetGet.*:Query.*:Enforcement.*:SafeFree.*:Quarantine.*:Signals.*:SignalsJump.*:CxxKey.*:CxxScopedRights.*:VKeys.*:GlibcTstPkey.*'
  echo "PKU-LANE-DONE"
  poweroff -f
fi
run pkeyctl-info -- ./pkeyctl info
run pkeyctl-demo -- ./pkeyctl demo
maps_check() {  # pkeyctl maps finds the sleeper's tagged pages under its key
  ./tagged_sleeper > /tmp/sleeper.out &
  sleeper=$!
  # Wait for its line, however slow the guest (at most 60 s).
  i=0
  while [ ! -s /tmp/sleeper.out ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
  read -r key _ < /tmp/sleeper.out
  if [ -z "$key" ]; then echo "tagged_sleeper printed no key"; kill $sleeper; return 1; fi
  ./pkeyctl maps $sleeper
  ./pkeyctl maps $sleeper | grep -q "^key $key \"tagged sleeper\"\|^key $key: 1 mapping(s), 8 KiB"
  rc=$?
  kill $sleeper
  return $rc
}
run pkeyctl-maps -- maps_check

# pkeyctl run --execute-only: the probe (tests/programs/xom_probe.cpp) and
# real Debian programs, with their loader and libraries from the build
# machine. expect_rc WANT NAME CMD...: CMD's output, and its exit status
# compared with WANT; its stderr is kept in /tmp/NAME.err for the checks.
# (Shell functions share variables: run's own $name must not change.)
expect_rc() {
  xom_want=$1 xom_name=$2
  shift 2
  "$@" 2>/tmp/"$xom_name".err
  xom_got=$?
  cat /tmp/"$xom_name".err
  echo "$xom_name: exit status $xom_got (want $xom_want)"
  [ "$xom_got" = "$xom_want" ]
}
# Without pkeyctl the probe's checks fail: they can.
xom_check_without() { expect_rc 1 xom-without ./xom_probe check; }
xom_check_strict() { expect_rc 0 xom-strict ./pkeyctl run --execute-only=strict -- ./xom_probe check; }
xom_check_learn() {
  expect_rc 0 xom-learn ./pkeyctl run --execute-only=learn -- ./xom_probe check &&
    grep -q "no code was read" /tmp/xom-learn.err
}
# strict: the read kills it (128 + SIGSEGV); learn: it goes on, reported.
xom_read_strict() { expect_rc 139 xom-read-strict ./pkeyctl run --execute-only=strict -- ./xom_probe read-code; }
xom_read_learn() {
  expect_rc 0 xom-read-learn ./pkeyctl run --execute-only=learn -- ./xom_probe read-code &&
    grep -q "read the code of /tests/xom_probe at offset 0x[0-9a-f]* (.*own_function.*), from /tests/xom_probe+0x[0-9a-f]* (main+0x" /tmp/xom-read-learn.err
}
# A program that reuses the report pipe's number for a file of its own.
xom_reused_fd() { expect_rc 0 xom-reused-fd ./pkeyctl run --execute-only=learn -- ./xom_probe reused-report-fd; }
# The program's own SIGSEGV handler for a fault of its own (learn chains to it).
xom_own_handler_strict() { expect_rc 42 xom-own-strict ./pkeyctl run --execute-only=strict -- ./xom_probe own-handler; }
xom_own_handler_learn() { expect_rc 42 xom-own-learn ./pkeyctl run --execute-only=learn -- ./xom_probe own-handler; }
# With the seccomp W^X filter (and MDWE on 6.3+) too: nothing it does asks
# for W+X or an execute gain.
xom_with_deny_wx() { expect_rc 0 xom-deny-wx ./pkeyctl run --deny-wx --execute-only=strict -- ./xom_probe check; }
xom_with_log_wx() {
  expect_rc 0 xom-log-wx ./pkeyctl run --log-wx --execute-only=learn -- ./xom_probe check &&
    ! grep -q "W^X" /tmp/xom-log-wx.err
}
xom_static() {
  expect_rc 1 xom-static ./pkeyctl run --execute-only -- /bin/busybox true &&
    grep -q "statically linked" /tmp/xom-static.err
}
xom_maps() {  # pkeyctl maps shows the probe's code as execute-only
  ./pkeyctl run --execute-only=strict -- ./xom_probe pause > /tmp/xom-pause.out &
  i=0
  while [ ! -s /tmp/xom-pause.out ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
  read -r xom_pid _ < /tmp/xom-pause.out
  if [ -z "$xom_pid" ]; then echo "xom_probe pause printed no pid"; return 1; fi
  ./pkeyctl maps "$xom_pid" > /tmp/xom-maps.out
  xom_got=$?
  cat /tmp/xom-maps.out
  kill "$xom_pid"
  [ $xom_got = 0 ] && grep -q "^key [0-9]* (execute-only code" /tmp/xom-maps.out &&
    grep -q -- "--xp /tests/xom_probe" /tmp/xom-maps.out
}
# Real programs: learn mode's report is the result wanted; strict is shown.
xom_real() {  # xom_real LABEL PROGRAM ARGS...
  xom_label=$1
  shift
  for xom_mode in learn strict; do
    echo "PKU-LANE-XOM: $xom_label --execute-only=$xom_mode: $*"
    ./pkeyctl run --execute-only=$xom_mode -- "$@" > /tmp/xom-real.out 2> /tmp/xom-real.err
    xom_got=$?
    head -n 5 /tmp/xom-real.out
    sed "s/^/PKU-LANE-XOM: $xom_label $xom_mode: /" /tmp/xom-real.err
    echo "PKU-LANE-XOM: $xom_label $xom_mode: exit status $xom_got"
    [ $xom_mode = strict ] || [ $xom_got = 0 ] || return 1
  done
}
run xom-static -- xom_static
run xom-check-without-pkeyctl -- xom_check_without
run xom-check-strict -- xom_check_strict
run xom-check-learn -- xom_check_learn
run xom-read-strict -- xom_read_strict
run xom-read-learn -- xom_read_learn
run xom-reused-report-fd -- xom_reused_fd
run xom-own-handler-strict -- xom_own_handler_strict
run xom-own-handler-learn -- xom_own_handler_learn
run xom-with-deny-wx -- xom_with_deny_wx
run xom-with-log-wx -- xom_with_log_wx
run xom-maps -- xom_maps
run xom-env -- xom_real env /usr/bin/env
run xom-ls -- xom_real ls /usr/bin/ls -l /tests
run xom-sha256sum -- xom_real sha256sum /usr/bin/sha256sum /tests/xom_probe
run xom-openssl -- xom_real openssl /usr/bin/openssl dgst -sha256 /tests/xom_probe
run startup-x86-pku PKEYS_BACKEND=x86-pku -- ./pkeys_startup
run conformance-x86-pku PKEYS_BACKEND=x86-pku -- ./pkeys_conformance
run conformance-emulated PKEYS_BACKEND=emulated -- ./pkeys_conformance
run concurrency-x86-pku PKEYS_BACKEND=x86-pku -- ./pkeys_concurrency
run vkeys-stress-x86-pku PKEYS_BACKEND=x86-pku -- ./pkeys_vkeys_stress
run vkeys-stress-emulated PKEYS_BACKEND=emulated -- ./pkeys_vkeys_stress
run allocator-reentry-x86-pku PKEYS_BACKEND=x86-pku -- ./pkeys_allocator_reentry
run allocator-reentry-emulated PKEYS_BACKEND=emulated -- ./pkeys_allocator_reentry
for b in auto x86-pku emulated bogus; do
  run backend-selection-$b PKEYS_BACKEND=$b -- ./pkeys_backend_selection
done
echo "PKU-LANE-DONE"
poweroff -f
