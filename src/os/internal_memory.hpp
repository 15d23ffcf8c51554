// SPDX-License-Identifier: MIT
// pkeys' own memory: what pkeys keeps (its records, its runtime, its
// backend) lives in mappings of its own, never in the program's heap,
// which the program can tag with a key and lock pkeys out of (a fault
// report would then fault inside itself).
//
// Regions are mapped with the raw system call (never the interposed mmap,
// which takes pkeys' lock) and never unmapped; freed blocks are kept for
// reuse. A leaf lock of its own guards them: nothing is called under it.
// Not for signal handlers (it allocates and locks).
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <new>

namespace pkeys::os {

// A block of at least `size` bytes, aligned to its size class (a power of
// two, at most a page), or null when memory ran out.
void* internal_allocate(std::size_t size) noexcept;
// Gives back a block internal_allocate(size) returned.
void internal_deallocate(void* block, std::size_t size) noexcept;
// A zeroed region of `size` bytes (rounded up to pages) of its own, for a
// table that must not move (lock-free readers index it); null when memory
// ran out. Its pages cost nothing until touched. Never given back.
void* internal_reserve(std::size_t size) noexcept;
// Whether [start, start + len) overlaps memory of pkeys' own.
bool overlaps_internal_memory(std::uintptr_t start, std::size_t len) noexcept;

// The standard allocator interface over that memory, for containers.
template <class T>
struct InternalAllocator {
  using value_type = T;
  InternalAllocator() noexcept = default;
  template <class U>
  InternalAllocator(const InternalAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    if (n > std::numeric_limits<std::size_t>::max() / sizeof(T)) throw std::bad_array_new_length();
    void* p = internal_allocate(n * sizeof(T));
    if (!p) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t n) noexcept { internal_deallocate(p, n * sizeof(T)); }
  template <class U>
  friend bool operator==(const InternalAllocator&, const InternalAllocator<U>&) noexcept {
    return true;
  }
};

}  // namespace pkeys::os
