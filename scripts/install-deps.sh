#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs the Debian packages pkeys needs, by name, when any is missing.
# usage: scripts/install-deps.sh [build|test]   (default: test)
set -euo pipefail
build_pkgs=(cmake make g++ libgtest-dev libbenchmark-dev libseccomp-dev)
test_pkgs=(qemu-system-x86 busybox-static cpio gzip pkgconf gnuplot-nox)
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
