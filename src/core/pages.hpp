// SPDX-License-Identifier: MIT
// Page size and page rounding.
#pragma once

#include <sys/syscall.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "arch/x86_64/syscall.hpp"

namespace pkeys::core {

inline std::uintptr_t page_size() noexcept {
  static const auto size = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  return size;
}

// The end of [addr, addr + len) rounded up to a page boundary, as mprotect
// and munmap round it.
inline std::uintptr_t page_end(std::uintptr_t addr, std::size_t len) noexcept {
  const std::uintptr_t mask = page_size() - 1;
  return addr + ((len + mask) & ~mask);
}

// 0 when all of [addr, addr + len) is mapped, else -ENOMEM (or mincore's
// error). Checked before changes made in several calls, since mprotect
// stops at a hole with the pages before it already changed.
inline long check_mapped(std::uintptr_t addr, std::size_t len) {
  std::vector<unsigned char> vec((len + page_size() - 1) / page_size());
  return sys::raw_syscall(SYS_mincore, static_cast<long>(addr), static_cast<long>(len),
                          reinterpret_cast<long>(vec.data()));
}

}  // namespace pkeys::core
