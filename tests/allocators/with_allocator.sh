#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs a test program with a malloc preloaded (LD_PRELOAD), for ctest's
# "allocators" tests. Exits 77 (ctest: skipped) with the reason when the
# run cannot happen here: the library was not found at configure time, or
# the build cannot take another malloc (sanitizers, static programs).
#
# usage: with_allocator.sh PRELOAD PROGRAM ARGS...   (PRELOAD: LD_PRELOAD's value)
#        with_allocator.sh --skip REASON
set -eu
if [ "$1" = --skip ]; then
  echo "SKIP: $2"
  exit 77
fi
preload=$1
shift
# The last library is the allocator; any before it load ahead of it.
allocator=${preload##*:}
case $allocator in
  *-NOTFOUND | "")
    echo "SKIP: ${allocator%-NOTFOUND} was not found when the build was configured (scripts/install-deps.sh test installs it)"
    exit 77 ;;
esac
for lib in $(echo "$preload" | tr ':' ' '); do
  [ -f "$lib" ] || { echo "FAIL: $lib is gone since the build was configured"; exit 1; }
done
# The loader only warns about a library it cannot preload, and runs the
# program anyway: make sure this one is really in the process.
if ! LD_PRELOAD=$preload cat /proc/self/maps | grep -qF "$(readlink -f "$allocator")"; then
  echo "FAIL: LD_PRELOAD=$preload does not load $allocator"
  exit 1
fi
echo "LD_PRELOAD=$preload"
LD_PRELOAD=$preload
export LD_PRELOAD
exec "$@"
