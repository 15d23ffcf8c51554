// SPDX-License-Identifier: MIT
#include "backend/backend.hpp"

#include <cerrno>
#include <new>

#include "backend/thread_signal.hpp"
#include "os/internal_memory.hpp"

namespace pkeys::backend {

int sync_threads_without_backend(std::vector<pid_t>* missed) noexcept {
  try {
    return apply_in_threads({-1, 0}, kOtherThreads, missed);
  } catch (const std::bad_alloc&) {
    return -ENOMEM;
  } catch (...) {  // a lock that failed: nothing was applied
    return -EIO;
  }
}

void* Backend::operator new(std::size_t size) {
  if (void* p = os::internal_allocate(size)) return p;
  throw std::bad_alloc();
}

void Backend::operator delete(void* p, std::size_t size) noexcept { os::internal_deallocate(p, size); }

int Backend::sync_threads(std::vector<pid_t>* missed) noexcept { return sync_threads_without_backend(missed); }

int cross_thread_signal() noexcept { return sync_signal(); }

}  // namespace pkeys::backend
