// SPDX-License-Identifier: MIT
// A malloc that goes to the kernel for every block, as jemalloc, tcmalloc
// and mimalloc do now and then: each allocation is a fresh mmap with an
// mprotect'ed guard page after it, realloc is mremap, free is munmap. Linked
// into a test program it replaces glibc's malloc for the whole process
// (libstdc++'s operator new and libpkeys' own allocations included), and
// its calls go through pkeys' interposed mmap family, so that any pkeys
// call that allocates while holding its lock re-enters pkeys
// deterministically, not only when a real allocator's arena runs out.
//
// Thread-safe without locks: every block is a mapping of its own.
// mmap_malloc_calls() counts the allocations, so a test can prove this
// malloc is the one in use.
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>

#include "mmap_malloc.hpp"

namespace {

std::atomic<long> g_calls{0};

constexpr size_t kPage = 4096;  // x86-64; a larger page only wastes a little

// Just before the pointer handed out: the mapping it lies in.
struct Header {
  void* base;
  size_t total;  // bytes mapped, the guard page included
};

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

Header* header_of(void* p) { return static_cast<Header*>(p) - 1; }

// A block of `size` bytes aligned to `align` (a power of two, at least 16).
void* allocate(size_t size, size_t align) noexcept {
  g_calls.fetch_add(1, std::memory_order_relaxed);
  if (size > (SIZE_MAX >> 2) || align > (SIZE_MAX >> 2)) {
    errno = ENOMEM;
    return nullptr;
  }
  const size_t usable = round_up(sizeof(Header) + align + size, kPage);
  const size_t total = usable + kPage;
  void* base = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) {
    errno = ENOMEM;
    return nullptr;
  }
  if (mprotect(static_cast<char*>(base) + usable, kPage, PROT_NONE) != 0) {
    munmap(base, total);
    errno = ENOMEM;
    return nullptr;
  }
  const uintptr_t user = round_up(reinterpret_cast<uintptr_t>(base) + sizeof(Header), align);
  void* p = reinterpret_cast<void*>(user);
  *header_of(p) = Header{base, total};
  return p;
}

size_t usable_size(void* p) noexcept {
  const Header h = *header_of(p);
  return static_cast<size_t>(static_cast<char*>(h.base) + h.total - kPage - static_cast<char*>(p));
}

}  // namespace

long mmap_malloc_calls() noexcept { return g_calls.load(std::memory_order_relaxed); }

extern "C" {

void* malloc(size_t size) { return allocate(size, 16); }

void free(void* p) {
  if (!p) return;
  const Header h = *header_of(p);
  munmap(h.base, h.total);
}

void* calloc(size_t n, size_t size) {
  if (size != 0 && n > SIZE_MAX / size) {
    errno = ENOMEM;
    return nullptr;
  }
  return allocate(n * size, 16);  // fresh anonymous pages are zero
}

void* realloc(void* p, size_t size) {
  if (!p) return malloc(size);
  if (size == 0) {
    free(p);
    return nullptr;
  }
  g_calls.fetch_add(1, std::memory_order_relaxed);
  const Header h = *header_of(p);
  const size_t offset = static_cast<size_t>(static_cast<char*>(p) - static_cast<char*>(h.base));
  if (size > (SIZE_MAX >> 2)) {
    errno = ENOMEM;
    return nullptr;
  }
  const size_t usable = round_up(offset + size, kPage);
  const size_t total = usable + kPage;
  // The old guard page becomes data: readable first, then the mapping
  // moves (mremap), and a new guard goes after the end.
  char* guard = static_cast<char*>(h.base) + h.total - kPage;
  if (mprotect(guard, kPage, PROT_READ | PROT_WRITE) != 0) {
    errno = ENOMEM;
    return nullptr;
  }
  void* base = mremap(h.base, h.total, total, MREMAP_MAYMOVE);
  if (base == MAP_FAILED) {
    mprotect(guard, kPage, PROT_NONE);
    errno = ENOMEM;
    return nullptr;
  }
  mprotect(static_cast<char*>(base) + usable, kPage, PROT_NONE);
  void* q = static_cast<char*>(base) + offset;
  *header_of(q) = Header{base, total};
  return q;
}

int posix_memalign(void** out, size_t align, size_t size) {
  if (align < sizeof(void*) || (align & (align - 1)) != 0) return EINVAL;
  void* p = allocate(size, align < 16 ? 16 : align);
  if (!p) return ENOMEM;
  *out = p;
  return 0;
}

void* aligned_alloc(size_t align, size_t size) {
  if (align == 0 || (align & (align - 1)) != 0) {
    errno = EINVAL;
    return nullptr;
  }
  return allocate(size, align < 16 ? 16 : align);
}

void* memalign(size_t align, size_t size) { return aligned_alloc(align, size); }
void* valloc(size_t size) { return allocate(size, kPage); }
void* pvalloc(size_t size) { return allocate(round_up(size, kPage), kPage); }
size_t malloc_usable_size(void* p) { return p ? usable_size(p) : 0; }

}  // extern "C"
