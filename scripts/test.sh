#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds pkeys every way CI does and passes every test. One line per step;
# each step's full output goes to a log it names (build/logs/STEP.log), and
# on a failure the end of that log is printed and the script stops, non-zero.
#
#   native  gcc, RelWithDebInfo, tests and benchmarks    build/
#   clang   clang-19, Release                            build-clang/
#   asan    gcc, Debug, AddressSanitizer + UBSan         build-asan/
#   tsan    gcc, MinSizeRel, ThreadSanitizer, the threaded tests   build-tsan/
#   lane    the PKU lane (scripts/pku-lane.sh): the suite on the x86-pku
#           backend under QEMU, booting Debian's 6.1 and 6.12 kernels
#           (6.12 also on a CPU without BMI1)                    build-pku-lane/
#
# Native steps use the backend this machine has (the emulation without
# PKU). Every configure turns warnings into errors (PKEYS_WERROR) and names
# every option it relies on, so a build directory that scripts/demo.sh or a
# person configured otherwise is brought back to it. A step that finds no
# tests fails.
#
# env: PKEYS_SKIP_LANE=1       leave out the lane (said so, never silently)
#      PKEYS_STEPS="a b ..."   run only these steps (default: all, in order)
#      PKEYS_BUILD_PREFIX=DIR  build directories DIR, DIR-clang, ... (default: build)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
jobs=$(nproc)
prefix=${PKEYS_BUILD_PREFIX:-build}
[[ $prefix == /* ]] || prefix=$root/$prefix
logs=$prefix/logs
mkdir -p "$logs"
"$root/scripts/install-deps.sh" test

show() { local p=$1; [[ $p == "$root"/* ]] && p=${p#"$root"/}; printf '%s' "$p"; }
elapsed() { local s=$1; printf '%dm%02ds' $((s / 60)) $((s % 60)); }

# The output of the tests ctest reports failed (with -j their lines mix
# with others' in the log): from each failure's status line to the next
# status line.
failed_output() {  # failed_output LOG
  awk '/Test +#[0-9]+: .*\*\*\*(Failed|Exception|Timeout|Not Run)/ { on = 1; print; next }
       /^ +Start +[0-9]+: / || /^ *[0-9]+\/[0-9]+ Test +#/ || /^[0-9]+% tests passed/ { on = 0 }
       on' "$1"
}

fail() {  # fail STEP LOG
  printf 'FAIL  %s — log: %s\n' "$1" "$(show "$2")"
  if grep -Eq 'Test +#[0-9]+: .*\*\*\*(Failed|Exception|Timeout|Not Run)' "$2"; then
    printf -- '----- the failed tests (at most 150 lines):\n'
    failed_output "$2" | head -n 150
    printf -- '----- ctest:\n'
    sed -n '/tests passed, .* tests failed out of/,$p' "$2"
  else
    printf -- '----- the last 60 lines of %s:\n' "$(show "$2")"
    tail -n 60 "$2"
  fi
  printf -- '----- FAILED: %s (full log: %s)\n' "$1" "$(show "$2")"
  exit 1
}

# A build directory configured with another compiler starts afresh:
# CMake fixes the compiler at the first configure. (/usr/bin/c++, CMake's
# default, is g++ through alternatives: the same.)
compiler_check() {  # compiler_check DIR CXX
  local cache=$1/CMakeCache.txt cached
  [[ -f $cache ]] || return 0
  cached=$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$cache")
  if [[ -z $cached || $(readlink -f "$cached") != $(readlink -f "$(command -v "$2")") ]]; then
    rm -rf "$cache" "$1/CMakeFiles"
  fi
}

# One step: configure, build, run ctest; then a line that counts the tests.
ctest_step() {  # ctest_step NAME DESCRIPTION CC CXX DIR "CTEST ARGS" CMAKE ARGS...
  local name=$1 desc=$2 cc=$3 cxx=$4 dir=$5 ctest_args=$6
  shift 6
  local log=$logs/$name.log start=$SECONDS
  printf '...   %s: building and testing in %s\n' "$desc" "$(show "$dir")"
  compiler_check "$dir" "$cxx"
  # shellcheck disable=SC2086 # ctest_args: several arguments
  if ! {
    echo "+ cmake -S $root -B $dir $*" &&
      CC=$cc CXX=$cxx cmake -S "$root" -B "$dir" -DPKEYS_WERROR=ON -DPKEYS_BUILD_TESTS=ON "$@" &&
      echo "+ cmake --build $dir -j$jobs" && cmake --build "$dir" -j"$jobs" &&
      echo "+ ctest $ctest_args" &&
      ctest --test-dir "$dir" --output-on-failure --no-tests=error -j"$jobs" $ctest_args
  } >"$log" 2>&1; then
    fail "$desc" "$log"
  fi
  local total failed skipped
  total=$(sed -n 's/.*tests failed out of \([0-9]*\).*/\1/p' "$log" | tail -n1)
  failed=$(sed -n 's/.* \([0-9]*\) tests failed out of.*/\1/p' "$log" | tail -n1)
  skipped=$(grep -c '^[[:space:]]*[0-9]* - .* (Skipped)$' "$log" || true)
  [[ -n $total && $total -gt 0 ]] || fail "$desc (no test ran)" "$log"
  printf 'ok    %s: %d tests, %d passed, %d skipped in %s — log: %s\n' "$desc" "$total" \
    $((total - ${failed:-0} - skipped)) "$skipped" "$(elapsed $((SECONDS - start)))" "$(show "$log")"
  all_passed=$((all_passed + total - ${failed:-0} - skipped))
  all_skipped=$((all_skipped + skipped))
}

lane_step() {
  local log=$logs/lane.log start=$SECONDS desc="lane (gcc RelWithDebInfo, x86-pku under QEMU TCG)"
  if [[ ${PKEYS_SKIP_LANE:-0} == 1 ]]; then
    printf 'SKIP  %s: PKEYS_SKIP_LANE=1\n' "$desc"
    return
  fi
  printf '...   %s: kernels 6.1 and 6.12 (and 6.12 without BMI1), in %s\n' "$desc" "$(show "$prefix-pku-lane")"
  # Its output is short: a line per test program and kernel.
  if ! "$root/scripts/pku-lane.sh" "$prefix-pku-lane" 2>&1 | tee "$log" | sed 's/^/      /'; then
    printf 'FAIL  %s — log: %s (guest consoles: %s)\n' "$desc" "$(show "$log")" "$(show "$prefix-pku-lane/logs")"
    exit 1
  fi
  # "kernel 6.1.0-56-amd64: 13 of 13 test programs passed in 38s" -> "6.1.0-56-amd64 13/13"
  printf 'ok    %s: test programs passed on %s in %s — log: %s\n' "$desc" \
    "$(sed -n 's/^  ok   kernel \([^:]*\): \([0-9]*\) of \([0-9]*\) .*/\1 \2\/\3/p' "$log" | paste -sd, | sed 's/,/, /g')" \
    "$(elapsed $((SECONDS - start)))" "$(show "$log")"
  local n
  for n in $(sed -n 's/^  ok   kernel [^:]*: \([0-9]*\) of .*/\1/p' "$log"); do
    all_passed=$((all_passed + n))
  done
}

all_passed=0 all_skipped=0
steps=${PKEYS_STEPS:-native clang asan tsan lane}
begin=$SECONDS
for step in $steps; do
  case $step in
    native) ctest_step native "native (gcc RelWithDebInfo)" gcc g++ "$prefix" "" \
              -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPKEYS_BUILD_BENCH=ON -DPKEYS_SANITIZE= ;;
    clang) ctest_step clang "clang-19 (Release)" clang-19 clang++-19 "$prefix-clang" "" \
              -DCMAKE_BUILD_TYPE=Release -DPKEYS_BUILD_BENCH=OFF -DPKEYS_SANITIZE= ;;
    asan) ctest_step asan "ASan+UBSan (gcc Debug)" gcc g++ "$prefix-asan" "" \
              -DCMAKE_BUILD_TYPE=Debug -DPKEYS_BUILD_BENCH=OFF -DPKEYS_SANITIZE=address,undefined ;;
    tsan) ctest_step tsan "TSan (gcc MinSizeRel, threaded tests)" gcc g++ "$prefix-tsan" "-L threads" \
              -DCMAKE_BUILD_TYPE=MinSizeRel -DPKEYS_BUILD_BENCH=OFF -DPKEYS_SANITIZE=thread ;;
    lane) lane_step ;;
    *) echo "unknown step '$step' (steps: native clang asan tsan lane)" >&2; exit 2 ;;
  esac
done
printf 'all steps passed (%s) in %s\n' "$steps" "$(elapsed $((SECONDS - begin)))"
# The closing line CI reads: ctest cases of every step plus the lane's programs.
printf 'tests: %d passed, 0 failed, %d skipped\n' "$all_passed" "$all_skipped"
