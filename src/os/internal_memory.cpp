// SPDX-License-Identifier: MIT
#include "os/internal_memory.hpp"

#include <pthread.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include <atomic>
#include <bit>

#include "arch/arch.hpp"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

namespace pkeys::os {
namespace {

constexpr std::size_t kMinClass = 4;     // 16 bytes
constexpr std::size_t kClasses = 48;     // up to 2^47 bytes
constexpr std::size_t kRegionSize = std::size_t{4} << 20;  // untouched pages cost nothing
constexpr std::size_t kMaxRegions = 1024;
constexpr std::uintptr_t kPage = 4096;

constexpr std::size_t whole_pages(std::size_t size) noexcept { return (size + kPage - 1) & ~(kPage - 1); }

struct FreeBlock {
  FreeBlock* next;
};

struct Region {
  std::uintptr_t start, end;
};

// Constant-initialised: usable before any constructor ran.
constinit std::atomic_flag g_lock = ATOMIC_FLAG_INIT;
constinit FreeBlock* g_free[kClasses] = {};
constinit std::uintptr_t g_bump = 0, g_bump_end = 0;
constinit Region g_regions[kMaxRegions] = {};
constinit std::atomic<std::size_t> g_region_count{0};

void lock() noexcept {
  while (g_lock.test_and_set(std::memory_order_acquire)) sys::raw_syscall(SYS_sched_yield);
}
void unlock() noexcept { g_lock.clear(std::memory_order_release); }

std::size_t class_of(std::size_t size) noexcept {
  const std::size_t c = size <= (std::size_t{1} << kMinClass) ? kMinClass : std::bit_width(size - 1);
  return c;
}

// A new mapping of `len` bytes (whole pages), recorded as pkeys' own, under
// the lock; 0 when memory ran out.
std::uintptr_t map_recorded(std::size_t len) noexcept {
  const std::size_t n = g_region_count.load(std::memory_order_relaxed);
  if (n == kMaxRegions) return 0;
  const long r = sys::raw_syscall(SYS_mmap, 0, static_cast<long>(len), PROT_READ | PROT_WRITE,
                                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (r < 0 && r > -4096) return 0;
  const auto start = static_cast<std::uintptr_t>(r);
  // Small pages: a transparent huge page would take 2 MiB of memory for a
  // few records.
  sys::raw_syscall(SYS_madvise, static_cast<long>(start), static_cast<long>(len), MADV_NOHUGEPAGE);
#if defined(__SANITIZE_ADDRESS__)
  // LeakSanitizer does not scan mappings of its own accord: what pkeys'
  // objects point to in the heap is reachable through them.
  __lsan_register_root_region(reinterpret_cast<void*>(start), len);
#endif
  g_regions[n] = Region{start, start + len};
  g_region_count.store(n + 1, std::memory_order_release);
  return start;
}

// A new region of at least `size` bytes for the allocator, under the lock.
bool map_region(std::size_t size) noexcept {
  const std::size_t len = size > kRegionSize ? whole_pages(size) : kRegionSize;
  const std::uintptr_t start = map_recorded(len);
  if (start == 0) return false;
  g_bump = start;
  g_bump_end = start + len;
  return true;
}

// Whoever forks holds no lock of the child: prepare takes this one after
// the core's (registered at load, before the core's handlers, so it runs
// after them), which may allocate under theirs.
void prepare_fork() noexcept { lock(); }
void after_fork() noexcept { unlock(); }
[[gnu::constructor(101)]] void register_fork_handlers() noexcept {
  ::pthread_atfork(prepare_fork, after_fork, after_fork);
}

}  // namespace

void* internal_allocate(std::size_t size) noexcept {
  const std::size_t c = class_of(size);
  if (c >= kClasses) return nullptr;
  const std::size_t block = std::size_t{1} << c;
  const std::uintptr_t align = block < kPage ? block : kPage;
  lock();
  void* out = nullptr;
  if (FreeBlock* f = g_free[c]) {
    g_free[c] = f->next;
    out = f;
  } else {
    std::uintptr_t at = (g_bump + align - 1) & ~(align - 1);
    if (g_bump == 0 || at > g_bump_end || g_bump_end - at < block) {
      if (map_region(block)) at = g_bump;  // a region's start is page-aligned
      else at = 0;
    }
    if (at) {
      g_bump = at + block;
      out = reinterpret_cast<void*>(at);
    }
  }
  unlock();
  return out;
}

void* internal_reserve(std::size_t size) noexcept {
  if (size == 0 || size > (std::size_t{1} << 47)) return nullptr;
  lock();
  const std::uintptr_t start = map_recorded(whole_pages(size));
  unlock();
  return reinterpret_cast<void*>(start);
}

void internal_deallocate(void* p, std::size_t size) noexcept {
  if (!p) return;
  const std::size_t c = class_of(size);
  auto* f = static_cast<FreeBlock*>(p);
  lock();
  f->next = g_free[c];
  g_free[c] = f;
  unlock();
}

bool overlaps_internal_memory(std::uintptr_t start, std::size_t len) noexcept {
  const std::uintptr_t end = start + len < start ? ~std::uintptr_t{0} : start + len;
  const std::size_t n = g_region_count.load(std::memory_order_acquire);
  for (std::size_t i = 0; i < n; ++i)
    if (start < g_regions[i].end && g_regions[i].start < end) return true;
  return false;
}

}  // namespace pkeys::os
