#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs the build in BUILD_DIR into a scratch prefix, then builds and
# runs a tiny consumer against it both ways: pkg-config and CMake.
# usage: tests/consumer/run.sh BUILD_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$1
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
for f in include/pkeys/pkeys.h include/pkeys/pkeys.hpp lib/libpkeys.so lib/libpkeys.a \
         lib/pkgconfig/pkeys.pc lib/cmake/pkeys/pkeysConfig.cmake share/man/man3/pkey_alloc.3 bin/pkeyctl; do
  [[ -e $prefix/$f ]] || { echo "not installed: $f"; exit 1; }
done

# pkg-config, shared and static.
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
cc "$here/consumer.c" $(pkg-config --cflags --libs pkeys) -Wl,-rpath,"$prefix/lib" -o "$prefix/consumer_pc"
"$prefix/consumer_pc"
cc "$here/consumer.c" $(pkg-config --cflags pkeys) "$prefix/lib/libpkeys.a" $(pkg-config --libs-only-l --static pkeys | sed 's/-lpkeys//') -o "$prefix/consumer_static"
"$prefix/consumer_static"

# CMake find_package.
cmake -S "$here" -B "$prefix/cmake-build" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_RPATH="$prefix/lib" >/dev/null
cmake --build "$prefix/cmake-build" >/dev/null
"$prefix/cmake-build/consumer_cmake"
echo "consumer: pkg-config (shared, static) and CMake builds run"
