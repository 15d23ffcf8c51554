/* SPDX-License-Identifier: MIT */
/* Configure-time probe (tests/CMakeLists.txt): exits 0 when the CPU has PKU
   and the kernel enabled it (CPUID leaf 7: ECX bit 3 PKU, bit 4 OSPKE), so
   that the conformance suite is registered for the x86-pku backend too. */
#include <cpuid.h>

int main(void) {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 1;
  return (c & (1u << 3)) && (c & (1u << 4)) ? 0 : 1;
}
