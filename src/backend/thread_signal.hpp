// SPDX-License-Identifier: MIT
// Changing the PKRU of other threads of this process: a signal handshake.
//
// PKRU is per-thread CPU state that only its own thread can write. To change
// another thread's rights, pkeys sends it a real-time signal (PKEYS_SIGNAL,
// default SIGRTMAX-1). The handler edits the PKRU saved in the signal
// frame's XSAVE area, only the target key's two bits, and acknowledges; on
// sigreturn the kernel loads the edited value, so the interrupted code
// resumes with the new rights. A thread blocked in a system call runs the
// handler and resumes the call (SA_RESTART). A thread that blocks the
// signal cannot be reached: the caller waits at most the timeout
// (PKEYS_SYNC_TIMEOUT_MS, default 200), gets -ETIMEDOUT and the list of
// threads that did not apply the change. Threads that appear while a
// broadcast runs are signalled too, until a scan finds none left.
//
// Requests are serialised; a handler that runs after its request timed out
// applies whatever request is current for it, never a stale one.
#pragma once

#include <sys/types.h>

#include <mutex>
#include <vector>

namespace pkeys::backend {

struct RightsChange {
  int key;          // -1: change nothing, only wait for each thread's handler
  unsigned rights;  // PKEY_DISABLE_* bits
};

// Thread id 0 for apply_in_threads: every thread of the process but the
// caller. (Backend::set_rights_in's 0 includes the caller: kAllThreads.)
constexpr pid_t kOtherThreads = 0;

// Applies `change` in thread `tid` (a thread of this process, not the
// caller), or, with kOtherThreads, in every thread but the caller. Returns 0,
// -ESRCH (tid is not a thread of this process), -ETIMEDOUT (see `missed`),
// or another -errno when the signal handler cannot be installed.
int apply_in_threads(RightsChange change, pid_t tid, std::vector<pid_t>* missed);

// The signal number used, after the first call; 0 before.
int thread_rights_signal() noexcept;

// Held by a cross-thread change while it runs. The backends' fork hooks
// (Backend::prepare_fork) take it (after the core's lock, the order every caller uses), so that a
// child never starts with it held.
std::mutex& thread_signal_mutex() noexcept;

}  // namespace pkeys::backend
