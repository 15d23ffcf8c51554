// SPDX-License-Identifier: MIT
// The architecture room's entry: what the core may ask of the CPU, in names
// that say nothing of x86. Backends that are x86 by nature (x86_pku,
// thread_signal) include arch/x86_64/ directly; everything else includes
// this header.
#pragma once

#include <cstdint>

#if defined(__x86_64__)
#include <x86intrin.h>

#include "arch/x86_64/signal_frame.hpp"
#include "arch/x86_64/syscall.hpp"
#else
#error "pkeys supports x86-64 only"
#endif

namespace pkeys::arch {

// A cheap, monotonic-enough tick count for least-recently-used order.
inline std::uint64_t cycle_count() noexcept { return __rdtsc(); }

// The access a page fault was raised for, from a signal handler's
// ucontext: 0 read, 1 write, 2 instruction fetch, -1 unknown.
inline int fault_access_kind(const void* ucontext) noexcept { return frame_access_kind(ucontext); }

}  // namespace pkeys::arch
