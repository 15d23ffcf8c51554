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

void prepare_fork_without_backend() noexcept { thread_signal_mutex().lock(); }

void after_fork_without_backend() noexcept { thread_signal_mutex().unlock(); }

void Backend::prepare_fork() noexcept { prepare_fork_without_backend(); }

void Backend::after_fork() noexcept { after_fork_without_backend(); }

}  // namespace pkeys::backend
