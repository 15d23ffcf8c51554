#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs the Debian packages pkeys needs, by name, when any is missing.
# usage: scripts/install-deps.sh [build|test]   (default: test)
#   build: what scripts/demo.sh needs to build everything (library, pkeyctl,
#          tests, benchmarks; pkgconf for the installed-tree consumer test)
#   test:  and what scripts/test.sh needs: clang-19 for the Clang step, the
#          PKU lane's QEMU, static busybox and initramfs tools (its kernels are
#          fetched with apt-get download), gnuplot for pkeyctl bench's plots,
#          and the mallocs the allocators tests preload (jemalloc, tcmalloc,
#          mimalloc)
set -euo pipefail
build_pkgs=(cmake make g++ libgtest-dev libbenchmark-dev libseccomp-dev pkgconf)
test_pkgs=(clang-19 qemu-system-x86 busybox-static cpio gzip binutils gnuplot-nox
           libjemalloc2 libtcmalloc-minimal4 libmimalloc2.0)
pkgs=("${build_pkgs[@]}")
[[ ${1:-test} == test ]] && pkgs+=("${test_pkgs[@]}")

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

sudo=""
[[ $(id -u) -ne 0 ]] && sudo=sudo
echo "installing: ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
