// SPDX-License-Identifier: MIT
#include "arch/x86_64/cpu_features.hpp"

#include <cpuid.h>

namespace pkeys::arch {

CpuFeatures read_cpu_features() noexcept {
  CpuFeatures f;
  unsigned a, b, c, d;
  if (__get_cpuid_max(0, nullptr) < 7) return f;
  __cpuid_count(7, 0, a, b, c, d);
  f.pku = (c >> 3) & 1u;
  f.ospke = (c >> 4) & 1u;
  f.bmi1 = (b >> 3) & 1u;
  if (__get_cpuid_max(0, nullptr) >= 0xD) {
    __cpuid_count(0xD, 9, a, b, c, d);
    f.pkru_xsave_offset = a == 0 ? 0 : b;  // EAX: size of the component
  }
  return f;
}

}  // namespace pkeys::arch
