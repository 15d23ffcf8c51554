#!/bin/busybox sh
# SPDX-License-Identifier: MIT
# /init of the PKU lane's initramfs: runs each test program, prints one
# result line per program on the serial console, then powers off.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
echo "PKU-LANE-CPU: $(grep -o -w -E 'pku|ospke' /proc/cpuinfo | sort -u | tr '\n' ' ')"
echo "PKU-LANE-KERNEL: $(uname -r)"

run() {  # run NAME ENV... -- PROGRAM ARGS...
  name=$1; shift
  envs=""
  while [ "$1" != "--" ]; do envs="$envs $1"; shift; done
  shift
  echo "PKU-LANE-RUN: $name"
  if [ -n "$envs" ]; then env $envs "$@" 2>&1; else "$@" 2>&1; fi
  echo "PKU-LANE-RESULT: $name rc=$?"
}

cd /tests
export GTEST_COLOR=no
run pkeyctl-info -- ./pkeyctl info
run pkeyctl-demo -- ./pkeyctl demo
maps_check() {  # pkeyctl maps finds the sleeper's tagged pages under its key
  ./tagged_sleeper > /tmp/sleeper.out &
  sleeper=$!
  sleep 1
  read key addr < /tmp/sleeper.out
  ./pkeyctl maps $sleeper
  ./pkeyctl maps $sleeper | grep -q "^key $key \"tagged sleeper\"\|^key $key: 1 mapping(s), 8 KiB"
  rc=$?
  kill $sleeper
  return $rc
}
run pkeyctl-maps -- maps_check
run startup-x86-pku PKEYS_BACKEND=x86-pku -- ./pkeys_startup
run conformance-x86-pku PKEYS_BACKEND=x86-pku -- ./pkeys_conformance
run conformance-emulated PKEYS_BACKEND=emulated -- ./pkeys_conformance
run concurrency-x86-pku PKEYS_BACKEND=x86-pku -- ./pkeys_concurrency
run vkeys-stress-x86-pku PKEYS_BACKEND=x86-pku -- ./pkeys_vkeys_stress
run vkeys-stress-emulated PKEYS_BACKEND=emulated -- ./pkeys_vkeys_stress
for b in auto x86-pku emulated bogus; do
  run backend-selection-$b PKEYS_BACKEND=$b -- ./pkeys_backend_selection
done
echo "PKU-LANE-DONE"
poweroff -f
