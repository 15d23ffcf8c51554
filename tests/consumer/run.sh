#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs the build in BUILD_DIR into a scratch prefix, then builds and
# runs a tiny consumer against it: pkg-config (shared, static), CMake from a
# C-only project (shared, static) and from C++; and the installed programs,
# moved elsewhere, with no LD_LIBRARY_PATH.
# usage: tests/consumer/run.sh BUILD_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source_dir=$(cd "$here/../.." && pwd)
build=$1
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
prefix=$root/prefix
unset LD_LIBRARY_PATH
cmake --install "$build" --prefix "$prefix" >/dev/null
for f in include/pkeys/pkeys.h include/pkeys/pkeys.hpp include/pkeys/pkru.h lib/libpkeys.so \
         lib/libpkeys.so.0 lib/libpkeys.a lib/pkgconfig/pkeys.pc lib/cmake/pkeys/pkeysConfig.cmake \
         bin/pkeyctl; do
  [[ -e $prefix/$f ]] || { echo "not installed: $f"; exit 1; }
done
# Every man page in the source tree, each in its section.
for page in "$source_dir"/man/*.[37]; do
  f=share/man/man${page##*.}/$(basename "$page")
  [[ -e $prefix/$f ]] || { echo "not installed: $f"; exit 1; }
done

# pkg-config, shared and static (the C driver: the static library's C++
# runtime must come from Libs.private).
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
cc "$here/consumer.c" $(pkg-config --cflags --libs pkeys) -Wl,-rpath,"$prefix/lib" -o "$root/consumer_pc"
"$root/consumer_pc"
cc "$here/consumer.c" $(pkg-config --cflags pkeys) "$prefix/lib/libpkeys.a" $(pkg-config --libs-only-l --static pkeys | sed 's/-lpkeys//') -o "$root/consumer_static"
"$root/consumer_static"

# CMake find_package from a C-only project: pkeys::pkeys and
# pkeys::pkeys_static (linked by the C driver).
cmake -S "$here" -B "$root/cmake-c" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_RPATH="$prefix/lib" >/dev/null
cmake --build "$root/cmake-c" >/dev/null
"$root/cmake-c/consumer_cmake"
"$root/cmake-c/consumer_cmake_static"
# From C++ with no standard set: the targets ask for C++23 themselves.
cmake -S "$here" -B "$root/cmake-cxx" -DCONSUMER_CXX=ON -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_RPATH="$prefix/lib" >/dev/null
cmake --build "$root/cmake-cxx" >/dev/null
"$root/cmake-cxx/consumer_cxx"
"$root/cmake-cxx/consumer_cxx_static"

# The installed programs run from wherever the prefix is (RPATH
# $ORIGIN/../lib): move it, and check each loads the moved libpkeys.
mv "$prefix" "$root/moved"
prefix=$root/moved
for program in pkeyctl pkeys_bench; do
  [[ -e $prefix/bin/$program ]] || continue
  line=$(ldd "$prefix/bin/$program" | grep -F libpkeys.so.0 || true)
  loaded=$(awk '{ print $3 }' <<<"$line")
  [[ $loaded == /* && $(realpath -e "$loaded") == $(realpath "$prefix/lib/libpkeys.so.0") ]] || {
    echo "installed $program: ldd says '${line:-no libpkeys.so.0}', want it from $prefix/lib"; exit 1; }
done
out=$("$prefix/bin/pkeyctl" info 2>&1) || { echo "$out"; echo "installed pkeyctl info failed"; exit 1; }
if [[ -e $prefix/bin/pkeys_bench ]]; then
  out=$("$prefix/bin/pkeys_bench" --benchmark_list_tests=true 2>&1) || {
    echo "$out"; echo "installed pkeys_bench failed"; exit 1; }
fi
echo "consumer: pkg-config (shared, static), CMake C (shared, static) and C++ builds run;" \
     "installed programs run from a moved prefix"
