#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds pkeys and passes every test:
#   1. native suite (the backend this machine has: emulated without PKU)
#   2. the same under AddressSanitizer + UndefinedBehaviorSanitizer
#   3. the threaded tests under ThreadSanitizer
#   4. the PKU lane: the suite on the x86-pku backend under QEMU (-cpu max)
# Set PKEYS_SKIP_LANE=1 to leave out step 4 (it never skips silently).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
jobs=$(nproc)
"$root/scripts/install-deps.sh" test

step() { printf '\n=== %s\n' "$*"; }

step "native build and tests"
cmake -S "$root" -B "$root/build" >/dev/null
cmake --build "$root/build" -j"$jobs" >/dev/null
ctest --test-dir "$root/build" --output-on-failure -j"$jobs"

step "AddressSanitizer + UndefinedBehaviorSanitizer"
cmake -S "$root" -B "$root/build-asan" -DPKEYS_SANITIZE=address,undefined -DPKEYS_BUILD_BENCH=OFF >/dev/null
cmake --build "$root/build-asan" -j"$jobs" >/dev/null
ctest --test-dir "$root/build-asan" --output-on-failure -j"$jobs"

step "ThreadSanitizer (threaded tests)"
cmake -S "$root" -B "$root/build-tsan" -DPKEYS_SANITIZE=thread -DPKEYS_BUILD_BENCH=OFF >/dev/null
cmake --build "$root/build-tsan" -j"$jobs" >/dev/null
ctest --test-dir "$root/build-tsan" --output-on-failure -L threads

step "PKU lane (x86-pku backend under QEMU TCG -cpu max)"
if [[ ${PKEYS_SKIP_LANE:-0} == 1 ]]; then
  echo "PKU lane SKIPPED: PKEYS_SKIP_LANE=1"
else
  "$root/scripts/pku-lane.sh" "$root/build-pku-lane"
fi
echo "all tests passed"
