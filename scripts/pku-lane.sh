#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The PKU lane: runs the test suite against the x86-pku backend by booting a
# Debian kernel under QEMU's TCG emulator with -cpu max (which emulates PKU)
# and an initramfs of busybox-static plus the statically linked tests.
# Fails when a test fails, the guest lacks PKU, or it does not finish in
# time. Timings under TCG mean nothing; only correctness counts here.
#
# usage: scripts/pku-lane.sh [BUILD_DIR]   (default: build-pku-lane)
# env:   PKEYS_LANE_TIMEOUT  seconds for the guest (default 900)
#        PKEYS_LANE_KERNEL   a vmlinuz to boot instead of downloading one
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build-pku-lane}
timeout_s=${PKEYS_LANE_TIMEOUT:-900}
mkdir -p "$build"
build=$(cd "$build" && pwd)

log() { printf 'pku-lane: %s\n' "$*" >&2; }

# --- the statically linked tests ---------------------------------------------
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPKEYS_STATIC_TESTS=ON \
  -DPKEYS_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" >/dev/null

# --- a Debian 6.1 kernel, downloaded by package name and unpacked -------------
kernel=${PKEYS_LANE_KERNEL:-}
if [[ -z $kernel ]]; then
  kdir=$build/kernel
  kernel=$(ls "$kdir"/boot/vmlinuz-* 2>/dev/null | head -n1 || true)
  if [[ -z $kernel ]]; then
    pattern='^linux-image-6\.1\.0-[0-9]+-amd64$'
    pkg=$(apt-cache search --names-only "$pattern" | awk '{print $1}' | sort -V | tail -n1)
    if [[ -z $pkg ]]; then
      apt-get update -qq >/dev/null
      pkg=$(apt-cache search --names-only "$pattern" | awk '{print $1}' | sort -V | tail -n1)
    fi
    [[ -n $pkg ]] || { log "no linux-image-6.1.0-*-amd64 package found"; exit 1; }
    log "downloading $pkg"
    mkdir -p "$kdir/deb"
    (cd "$kdir/deb" && apt-get download "$pkg" >/dev/null)
    dpkg -x "$kdir"/deb/*.deb "$kdir"
    rm -rf "$kdir/deb" "$kdir/lib"
    kernel=$(ls "$kdir"/boot/vmlinuz-* | head -n1)
  fi
fi
log "kernel $(basename "$kernel")"

# --- the initramfs ---------------------------------------------------------
initrd_dir=$build/initramfs
rm -rf "$initrd_dir"
mkdir -p "$initrd_dir"/{bin,proc,sys,dev,tmp,tests}
cp /bin/busybox "$initrd_dir/bin/busybox"
if ldd "$initrd_dir/bin/busybox" >/dev/null 2>&1; then
  log "/bin/busybox is not statically linked: install busybox-static"; exit 1
fi
cp "$build/tests/pkeys_conformance" "$build/tests/pkeys_concurrency" \
   "$build/tests/pkeys_backend_selection" "$build/tests/pkeys_vkeys_stress" "$build/tests/pkeys_startup" "$build/tests/tagged_sleeper" "$build/tools/pkeyctl/pkeyctl" "$initrd_dir/tests/"
for t in "$initrd_dir"/tests/*; do
  if ldd "$t" >/dev/null 2>&1; then log "$(basename "$t") is not statically linked"; exit 1; fi
done
cp "$root/scripts/pku-lane-init.sh" "$initrd_dir/init"
chmod +x "$initrd_dir/init"
(cd "$initrd_dir" && find . | cpio -o -H newc --quiet | gzip -1) >"$build/initramfs.cpio.gz"

# --- boot -------------------------------------------------------------------
console=$build/console.log
log "booting under qemu-system-x86_64 -accel tcg -cpu max (limit ${timeout_s}s)"
set +e
timeout --kill-after=10 "$timeout_s" qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 1024 \
  -nographic -no-reboot -kernel "$kernel" -initrd "$build/initramfs.cpio.gz" \
  -append "console=ttyS0 panic=-1 quiet loglevel=3" </dev/null 2>&1 | tr -d '\r' | tee "$console"
qemu_rc=${PIPESTATUS[0]}
set -e

# --- verdict ----------------------------------------------------------------
if [[ $qemu_rc -eq 124 || $qemu_rc -eq 137 ]]; then log "FAIL: the guest did not finish within ${timeout_s}s"; exit 1; fi
grep -q '^PKU-LANE-DONE' "$console" || { log "FAIL: the guest stopped before the end (qemu rc $qemu_rc)"; exit 1; }
grep -aq 'PKU-LANE-CPU: .*pku' "$console" && grep -aq 'PKU-LANE-CPU: .*ospke' "$console" ||
  { log "FAIL: the guest CPU lacks pku/ospke; the lane would not test the hardware backend"; exit 1; }
expected=$(grep -c '^PKU-LANE-RUN:' "$console" || true)
passed=$(grep -c '^PKU-LANE-RESULT: .* rc=0$' "$console" || true)
failed=$(grep '^PKU-LANE-RESULT:' "$console" | grep -vc ' rc=0$' || true)
grep '^PKU-LANE-RESULT:' "$console" >&2
if [[ $failed -ne 0 || $passed -ne $expected || $expected -eq 0 ]]; then
  log "FAIL: $passed of $expected test programs passed"
  exit 1
fi
log "OK: $passed of $expected test programs passed on the x86-pku backend under QEMU"
