// SPDX-License-Identifier: MIT
// mmap, munmap, mremap and mprotect, interposed so that pkeys' records
// follow the program's mappings: a range that is unmapped or mapped anew no
// longer carries its key (safe free depends on it), and on the emulation a
// plain mprotect of a tagged range keeps the key's rights enforced, as the
// hardware keeps a page's key. While no range is tagged each call is the
// bare system call. glibc's internal calls (malloc's) bypass these; pkey_free
// re-reads /proc/self/maps before it trusts a record.
//
// They are also entered from inside pkeys: the program's malloc (jemalloc,
// tcmalloc, mimalloc, most custom ones) may call mmap, munmap, mremap or
// mprotect while pkeys allocates under its lock (records that grow or
// split, labels, vkeys). Taking the lock again there would hang the
// thread, so such a call is the bare system call and leaves the records
// alone (they are half-changed at that point anyway). What it may mean
// for them, by call:
//  - mmap: fresh memory for the allocator, never one of the program's
//    tagged ranges (a MAP_FIXED lands inside the allocator's own
//    reservation): nothing to record.
//  - munmap, mremap: the allocator gives back or moves its own memory.
//    That could only be a tagged range if the program tagged heap memory
//    and freed it still tagged; then the records keep stale ranges, as
//    after any raw munmap pkeys did not see: safe free prunes them from
//    /proc/self/maps, enforcement skips what is no longer mapped, and a
//    later mapping pkeys sees at that address replaces them.
//  - mprotect: the allocator's own pages (guards). Were they a tagged
//    range freed to the heap still tagged, the records would keep the
//    protection asked before, and on the emulation the key's rights would
//    not hold there until they are next set.
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include <new>

#include "arch/arch.hpp"
#include "capi/errno_result.hpp"
#include "core/address_space.hpp"
#include "core/runtime.hpp"
#include "pkeys/pkeys.h"

using pkeys::capi::ErrnoResult;
using pkeys::core::AddressSpace;
using pkeys::core::Runtime;
namespace sys = pkeys::sys;

namespace {

// Whether a call goes through pkeys' records: not while none is tagged,
// and never from inside pkeys (this thread holds, or is taking, the lock).
bool tracking() noexcept { return AddressSpace::any_tagged() && !AddressSpace::held_by_this_thread(); }

// These are noexcept to their callers: out of memory (constructing the
// Runtime, or records that must split) is ENOMEM, never std::terminate.
template <class F>
long guarded(F&& f) noexcept {
  try {
    return f(Runtime::instance());
  } catch (const std::bad_alloc&) {
    return -ENOMEM;
  } catch (...) {
    return -EIO;
  }
}

void* as_pointer(long r) noexcept {
  if (r < 0 && r >= -4095) {
    errno = static_cast<int>(-r);
    return MAP_FAILED;
  }
  return reinterpret_cast<void*>(r);
}

}  // namespace

extern "C" {

PKEYS_API void* mmap(void* addr, size_t len, int prot, int flags, int fd, off_t offset) __THROW {
  if (!tracking())
    return as_pointer(sys::raw_syscall(SYS_mmap, reinterpret_cast<long>(addr),
                                       static_cast<long>(len), prot, flags, fd, offset));
  return as_pointer(guarded([&](Runtime& rt) { return rt.map(addr, len, prot, flags, fd, offset); }));
}

PKEYS_API void* mmap64(void* addr, size_t len, int prot, int flags, int fd, off64_t offset) __THROW {
  return mmap(addr, len, prot, flags, fd, offset);
}

PKEYS_API int munmap(void* addr, size_t len) __THROW {
  ErrnoResult result;
  if (!tracking())
    return static_cast<int>(result(sys::raw_syscall(SYS_munmap, reinterpret_cast<long>(addr),
                                                    static_cast<long>(len))));
  return static_cast<int>(result(guarded([&](Runtime& rt) { return rt.unmap(addr, len); })));
}

PKEYS_API int mprotect(void* addr, size_t len, int prot) __THROW {
  ErrnoResult result;
  if (!tracking())
    return static_cast<int>(result(sys::raw_syscall(SYS_mprotect, reinterpret_cast<long>(addr),
                                                    static_cast<long>(len), prot)));
  return static_cast<int>(
      result(guarded([&](Runtime& rt) -> long { return rt.protect(addr, len, prot, -1); })));
}

PKEYS_API void* mremap(void* old_addr, size_t old_len, size_t new_len, int flags, ...) __THROW {
  void* new_addr = nullptr;
  if (flags & MREMAP_FIXED) {
    va_list ap;
    va_start(ap, flags);
    new_addr = va_arg(ap, void*);
    va_end(ap);
  }
  if (!tracking())
    return as_pointer(sys::raw_syscall(SYS_mremap, reinterpret_cast<long>(old_addr),
                                       static_cast<long>(old_len), static_cast<long>(new_len),
                                       flags, reinterpret_cast<long>(new_addr)));
  return as_pointer(guarded([&](Runtime& rt) { return rt.remap(old_addr, old_len, new_len, flags, new_addr); }));
}

}  // extern "C"
