// SPDX-License-Identifier: MIT
// Page arithmetic, and the page protections that stand in for key rights.
//
// The OS room: below the backends and the core, above arch/. It knows
// pages and /proc, nothing of keys' bookkeeping.
#pragma once

#include <sys/syscall.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>

#include "arch/arch.hpp"

namespace pkeys::os {

inline std::uintptr_t page_size() noexcept {
  static const auto size = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  return size;
}

// `len` rounded up to whole pages, as mprotect and munmap round it.
inline std::size_t page_round_up(std::size_t len) noexcept {
  const std::uintptr_t mask = page_size() - 1;
  return (len + mask) & ~mask;
}

// The end of [addr, addr + len) rounded up to a page boundary.
inline std::uintptr_t page_end(std::uintptr_t addr, std::size_t len) noexcept {
  return addr + page_round_up(len);
}

// 0 when all of [addr, addr + len) is mapped, else -ENOMEM (or mincore's
// error). Checked before changes made in several calls, since mprotect
// stops at a hole with the pages before it already changed. Allocates
// nothing: mincore fills a buffer on the stack, a chunk at a time.
inline long check_mapped(std::uintptr_t addr, std::size_t len) noexcept {
  unsigned char vec[256];
  const std::uintptr_t chunk = sizeof vec * page_size();
  const std::uintptr_t end = page_end(addr, len);
  for (std::uintptr_t a = addr; a < end; a += chunk) {
    const std::uintptr_t n = end - a < chunk ? end - a : chunk;
    if (long r = sys::raw_syscall(SYS_mincore, static_cast<long>(a), static_cast<long>(n),
                                  reinterpret_cast<long>(vec));
        r < 0)
      return r;
  }
  return 0;
}

// Page protection that enforces process-wide `rights` on pages the program
// asked to have `prot`: DISABLE_ACCESS removes read, write and execute
// (x86 cannot deny reads of executable pages without PKU), DISABLE_WRITE
// removes write. Other bits, valid or not, pass to the kernel untouched.
constexpr int enforced_prot(int prot, unsigned rights) noexcept {
  constexpr int kRead = 0x1, kWrite = 0x2, kExec = 0x4;  // PROT_*
  if (rights & 0x1) return prot & ~(kRead | kWrite | kExec);  // PKEY_DISABLE_ACCESS
  if (rights & 0x2) return prot & ~kWrite;                      // PKEY_DISABLE_WRITE
  return prot;
}

// Whether `rights`, enforced with page protections, deny an access that
// pages of `prot` would allow: what makes a key to blame for a fault.
constexpr bool rights_deny(unsigned rights, int prot) noexcept {
  constexpr int kRead = 0x1, kWrite = 0x2;  // PROT_*
  return ((rights & 0x1) && (prot & (kRead | kWrite))) || ((rights & 0x2) && (prot & kWrite));
}

}  // namespace pkeys::os
