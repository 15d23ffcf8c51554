// SPDX-License-Identifier: MIT
#include "backend/select.hpp"

#include <cstdlib>
#include <cstring>

#include "arch/x86_64/cpu_features.hpp"
#include "backend/emulated.hpp"
#include "backend/x86_pku.hpp"

namespace pkeys::backend {
namespace {

// Empty when x86 PKU is usable, else why not.
std::string why_no_pku() {
  const arch::CpuFeatures cpu = arch::read_cpu_features();
  if (!cpu.pku) return "the CPU does not report PKU (CPUID.7.0:ECX bit 3)";
  if (!cpu.ospke) return "the OS has not enabled PKU (OSPKE, CPUID.7.0:ECX bit 4, is clear)";
  if (!X86PkuBackend::kernel_supports_pkeys()) return "the kernel's pkey_alloc fails";
  return {};
}

}  // namespace

Selection select_backend() {
  const char* env = std::getenv("PKEYS_BACKEND");
  const std::string wanted = env && *env ? env : "auto";
  Selection s;
  if (wanted == "emulated") {
    s.backend = std::make_unique<EmulatedBackend>();
    s.reason = "PKEYS_BACKEND=emulated asked for the emulation";
    return s;
  }
  if (wanted != "auto" && wanted != "x86-pku") {
    s.reason = "PKEYS_BACKEND=" + wanted + " is not a backend (auto, x86-pku, emulated)";
    return s;
  }
  const std::string missing = why_no_pku();
  if (missing.empty()) {
    s.backend = std::make_unique<X86PkuBackend>();
    s.reason = wanted == "auto" ? "auto: the CPU has PKU, the OS enabled it and the kernel's pkey_alloc works"
                                : "PKEYS_BACKEND=x86-pku, and the hardware supports it";
    return s;
  }
  if (wanted == "x86-pku") {
    s.reason = "PKEYS_BACKEND=x86-pku, but " + missing;
    return s;
  }
  s.backend = std::make_unique<EmulatedBackend>();
  s.reason = "auto: " + missing + ", so keys are emulated with mprotect";
  return s;
}

}  // namespace pkeys::backend
