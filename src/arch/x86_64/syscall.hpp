// SPDX-License-Identifier: MIT
// Raw x86-64 system calls that return -errno instead of touching errno.
//
// pkeys interposes mmap, munmap, mremap and mprotect, and runs code in
// signal handlers: its own system calls must neither re-enter those
// interposers nor disturb the caller's errno.
#pragma once

#include <cstdint>

namespace pkeys::sys {

inline long raw_syscall(long nr, long a = 0, long b = 0, long c = 0, long d = 0,
                        long e = 0, long f = 0) noexcept {
  long ret;
  register long r10 asm("r10") = d;
  register long r8 asm("r8") = e;
  register long r9 asm("r9") = f;
  asm volatile("syscall"
               : "=a"(ret)
               : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
               : "rcx", "r11", "memory");
  return ret;
}

}  // namespace pkeys::sys
