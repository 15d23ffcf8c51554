// SPDX-License-Identifier: MIT
#include "backend/backend.hpp"

#include <cerrno>
#include <new>

#include "backend/thread_signal.hpp"

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

int Backend::sync_threads(std::vector<pid_t>* missed) noexcept { return sync_threads_without_backend(missed); }

int cross_thread_signal() noexcept { return sync_signal(); }

}  // namespace pkeys::backend
