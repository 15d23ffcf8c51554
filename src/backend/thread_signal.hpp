// SPDX-License-Identifier: MIT
// Changing the PKRU of other threads of this process: a signal handshake.
//
// PKRU is per-thread CPU state that only its own thread can write. To change
// another thread's rights, pkeys sends it a real-time signal; the handler
// edits the PKRU saved in the signal frame, only the target key's two bits,
// and acknowledges; on sigreturn the kernel loads the edited value, so the
// interrupted code resumes with the new rights. A thread interrupted
// inside one of pkeys' own PKRU switches is moved back to its start
// (arch/x86_64/pkru_switches.hpp), so its WRPKRU cannot undo the edit.
//
// Only threads that need the change are signalled: the registry
// (thread_registry.hpp) knows each registered thread's PKRU as pkeys' switches
// last wrote it; a thread whose rights already match is left alone (a
// signal would make its nanosleep, poll or select fail with EINTR).
// Threads pkeys does not know are always signalled.
//
// The signal is chosen at first use: PKEYS_SIGNAL if set, else the highest
// real-time signal below SIGRTMAX that has no handler. If the program later
// installs its own handler on it, cross-thread changes fail with -EBUSY.
// A thread that blocks the signal, or that the kernel cannot queue it to
// (RLIMIT_SIGPENDING), is not reached: the caller waits at most the timeout
// (PKEYS_SYNC_TIMEOUT_MS, default 200) and gets -ETIMEDOUT and the list of
// threads that did not apply the change.
//
// Requests are serialised by threads_mutex(); a handler that runs after its
// request timed out applies whatever request is current for it, never a
// stale one.
#pragma once

#include <sys/types.h>

#include <vector>

namespace pkeys::backend {

struct RightsChange {
  int key;          // -1: change no key, only reach the threads pkeys does not know
  unsigned rights;  // PKEY_DISABLE_* bits
  bool include_self = false;  // the calling thread too (its own PKRU, no signal)
  // Checked under the handshake's lock before anything changes: false
  // fails the change with -EINVAL. A free of the key takes the same lock
  // to reset it in every thread, so the two are ordered.
  bool (*still_valid)(int key) noexcept = nullptr;
};

// Thread id 0 for apply_in_threads: every thread of the process but the
// caller. (Backend::set_rights_in's 0 includes the caller: kAllThreads.)
constexpr pid_t kOtherThreads = 0;

// Applies `change` in thread `tid` (a thread of this process, not the
// caller), or, with kOtherThreads, in every thread but the caller. Returns 0,
// -ESRCH (tid is not a thread of this process, or it exited before it
// applied the change), -ETIMEDOUT (see `missed`), -EINVAL (still_valid
// said no), -EBUSY (the program took over the signal), -EAGAIN (no
// real-time signal free, or more threads than pkeys can track).
int apply_in_threads(RightsChange change, pid_t tid, std::vector<pid_t>* missed);

// The signal used for cross-thread changes, choosing it and installing its
// handler at the first call; -EBUSY when the program has taken it over,
// -EAGAIN when no real-time signal is free.
int sync_signal() noexcept;

// Whether `tid` is a live thread of this process that has not exited
// (by the registry, so a thread just joined is gone).
bool is_live_thread(pid_t tid) noexcept;

}  // namespace pkeys::backend
