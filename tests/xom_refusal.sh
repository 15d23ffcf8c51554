#!/bin/sh
# SPDX-License-Identifier: MIT
# pkeyctl run --execute-only where it cannot work: a statically linked
# program (anywhere), and any program on a machine without x86 PKU. Each
# refusal is exit status 1 and one line on stderr saying why; the program
# never runs.
# pkeyctl finds libpkeys_xom.so beside itself as installed (bin/ -> lib/):
# a copy laid out so is refused for want of PKU, or runs, and one without
# the library says the library is missing (125) before anything else.
# usage: xom_refusal.sh PKEYCTL STATIC_PROGRAM XOM_LIBRARY
set -u
pkeyctl=$1 static=$2 library=$3
out=$(mktemp) err=$(mktemp) prefix=$(mktemp -d)
trap 'rm -rf "$out" "$err" "$prefix"' EXIT
fail=0

expect_refusal() {  # expect_refusal WHAT PATTERN ARGS...: exit 1, one line matching PATTERN
  what=$1 pattern=$2
  shift 2
  "$pkeyctl" run "$@" >"$out" 2>"$err"
  rc=$?
  lines=$(wc -l <"$err")
  if [ "$rc" -ne 1 ] || [ "$lines" -ne 1 ] || ! grep -q -- "$pattern" "$err" || [ -s "$out" ]; then
    echo "FAIL $what: rc=$rc (want 1), $lines stderr line(s) (want 1 matching '$pattern'):"
    cat "$err" "$out"
    fail=1
  else
    echo "ok   $what: $(cat "$err")"
  fi
}

# The program would print this: it must not have run.
marker=xom-refusal-the-program-ran
expect_refusal "static program, strict" "is statically linked" --execute-only=strict -- "$static"
expect_refusal "static program, learn" "is statically linked" --execute-only -- "$static"

if grep -qw pku /proc/cpuinfo && grep -qw ospke /proc/cpuinfo; then
  echo "this machine has PKU: the no-PKU refusal is tested where it has none (the PKU lane runs the rest)"
else
  expect_refusal "no PKU, learn" "needs x86 PKU.*and .*\(hypervisor\|CPU\|kernel\)" --execute-only -- /bin/echo "$marker"
  expect_refusal "no PKU, strict" "needs x86 PKU" --execute-only=strict -- /bin/echo "$marker"
  expect_refusal "no PKU, with --deny-wx" "needs x86 PKU" --deny-wx --execute-only=strict -- /bin/echo "$marker"
fi
# An installed layout, and one missing the library.
mkdir -p "$prefix/ok/bin" "$prefix/ok/lib" "$prefix/missing/bin"
cp "$pkeyctl" "$prefix/ok/bin/pkeyctl"
cp "$library" "$prefix/ok/lib/libpkeys_xom.so"
cp "$pkeyctl" "$prefix/missing/bin/pkeyctl"
"$prefix/missing/bin/pkeyctl" run --execute-only -- /bin/echo "$marker" >"$out" 2>"$err"
rc=$?
if [ "$rc" -ne 125 ] || ! grep -q "libpkeys_xom.so is not installed beside pkeyctl (looked for $prefix/missing/bin/" "$err" ||
   [ -s "$out" ]; then
  echo "FAIL no library beside an installed pkeyctl: rc=$rc (want 125)"; cat "$err" "$out"; fail=1
else
  echo "ok   no library beside an installed pkeyctl: $(cat "$err")"
fi
"$prefix/ok/bin/pkeyctl" run --execute-only -- /bin/echo "$marker" >"$out" 2>"$err"
rc=$?
if grep -q "not installed" "$err" || { [ "$rc" -ne 1 ] && [ "$rc" -ne 0 ]; }; then
  echo "FAIL the library beside an installed pkeyctl: rc=$rc"; cat "$err" "$out"; fail=1
else
  echo "ok   the library beside an installed pkeyctl is found (rc=$rc: $(head -n1 "$err"))"
fi

# A mode that does not exist is a usage error (2), whatever the machine.
"$pkeyctl" run --execute-only=sometimes -- /bin/echo "$marker" >"$out" 2>"$err"
rc=$?
if [ "$rc" -ne 2 ] || grep -q "$marker" "$out"; then
  echo "FAIL --execute-only=sometimes: rc=$rc (want 2)"; cat "$err"; fail=1
else
  echo "ok   unknown mode: $(head -n1 "$err")"
fi
exit $fail
