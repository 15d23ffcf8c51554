#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds pkeys and runs its main job, `pkeyctl demo`.
# It configures build/ exactly as scripts/test.sh's native step does (tests
# and benchmarks on, so `pkeyctl bench` and `cmake --install build` find
# pkeys_bench) and builds everything: the two scripts run in either order
# and neither undoes the other.
#
# env: PKEYS_BUILD_PREFIX=DIR  build in DIR instead of build/ (as test.sh)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh" build
build=${PKEYS_BUILD_PREFIX:-build}
[[ $build == /* ]] || build=$root/$build
mkdir -p "$build/logs"
log=$build/logs/demo-build.log
shown=${log#"$root"/}
echo "building pkeys (log: $shown)" >&2
if ! {
  CC=gcc CXX=g++ cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DPKEYS_WERROR=ON -DPKEYS_BUILD_TESTS=ON -DPKEYS_BUILD_BENCH=ON -DPKEYS_SANITIZE= &&
    cmake --build "$build" -j"$(nproc)"
} >"$log" 2>&1; then
  tail -n 60 "$log" >&2
  echo "demo.sh: the build failed; full log: $shown" >&2
  exit 1
fi
exec "$build/tools/pkeyctl/pkeyctl" demo
