// SPDX-License-Identifier: MIT
// What the CPU says about protection keys (CPUID leaf 7 and leaf 0xD).
#pragma once

namespace pkeys::arch {

struct CpuFeatures {
  bool pku = false;    // CPUID.(EAX=7,ECX=0):ECX bit 3: the CPU has PKU
  bool ospke = false;  // bit 4: the OS enabled it (CR4.PKE)
  bool bmi1 = false;   // CPUID.(EAX=7,ECX=0):EBX bit 3: ANDN, BEXTR (inline pkey_set, pkey_get)
  // Byte offset of the PKRU component in a standard-format XSAVE area
  // (CPUID.(EAX=0xD,ECX=9):EBX); 0 when unknown.
  unsigned pkru_xsave_offset = 0;
};

CpuFeatures read_cpu_features() noexcept;

}  // namespace pkeys::arch
