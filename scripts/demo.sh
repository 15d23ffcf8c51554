#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds pkeys and runs its main job, `pkeyctl demo`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh" build
cmake -S "$root" -B "$root/build" -DPKEYS_BUILD_TESTS=OFF -DPKEYS_BUILD_BENCH=OFF >/dev/null
cmake --build "$root/build" -j"$(nproc)" --target pkeyctl >/dev/null
exec "$root/build/tools/pkeyctl/pkeyctl" demo
