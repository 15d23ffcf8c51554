// SPDX-License-Identifier: MIT
#include "backend/thread_signal.hpp"

#include <linux/futex.h>
#include <signal.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <mutex>

#include "arch/x86_64/pkru_switches.hpp"
#include "arch/x86_64/signal_frame.hpp"
#include "arch/x86_64/syscall.hpp"
#include "backend/thread_registry.hpp"
#include "pkeys/pkru.h"

namespace pkeys::backend {
namespace {

// One target thread of the current request. state: generation << 2, | 1
// once applied, | 2 once given up on (a late handler must not count), | 3
// when the handler could not vouch for it (see on_rights_signal).
// change: the PKRU bits to set (high 32) and their values (low 32): the
// request's key, and any change this thread missed before.
struct Slot {
  std::atomic<pid_t> tid{0};
  std::atomic<std::uint64_t> state{0};
  std::atomic<std::uint64_t> change{0};
};

constexpr int kMaxTargets = 32768;
Slot g_slots[kMaxTargets];
std::atomic<int> g_slot_count{0};
OtherThread g_targets[kMaxTargets];  // under threads_mutex()
// The current request's generation.
std::atomic<std::uint32_t> g_request{0};
// Targets that have not answered: the futex word the requester sleeps on;
// the handler that takes it to 0 wakes it.
std::atomic<int> g_outstanding{0};
std::uint32_t g_generation = 0;
int g_signal = 0;

constexpr std::uint64_t pending_state(std::uint32_t gen) { return std::uint64_t{gen} << 2; }
constexpr std::uint64_t done_state(std::uint32_t gen) { return pending_state(gen) | 1; }
constexpr std::uint64_t abandoned_state(std::uint32_t gen) { return pending_state(gen) | 2; }
constexpr std::uint64_t unsure_state(std::uint32_t gen) { return pending_state(gen) | 3; }

pid_t raw_gettid() noexcept { return static_cast<pid_t>(sys::raw_syscall(SYS_gettid)); }
long raw_tgkill(pid_t tid, int sig) noexcept { return sys::raw_syscall(SYS_tgkill, ::getpid(), tid, sig); }

void on_rights_signal(int, siginfo_t*, void* ucontext) {
  const int saved_errno = errno;
  const std::uint32_t gen = g_request.load(std::memory_order_acquire);
  const pid_t me = raw_gettid();
  const int n = g_slot_count.load(std::memory_order_acquire);
  for (int i = 0; i < n; ++i) {
    Slot& slot = g_slots[i];
    if (slot.tid.load(std::memory_order_acquire) != me) continue;
    std::uint64_t expected = pending_state(gen);
    if (slot.state.load(std::memory_order_acquire) != expected) break;
    const std::uint64_t change = slot.change.load(std::memory_order_acquire);
    const auto mask = static_cast<std::uint32_t>(change >> 32);
    const auto bits = static_cast<std::uint32_t>(change) & mask;
    std::uint64_t outcome = done_state(gen);
    if (mask != 0) {
      std::uint32_t pkru;
      if (!arch::frame_pkru(ucontext, &pkru)) break;  // cannot apply: the requester times out
      // Interrupted between its RDPKRU and WRPKRU: make it read again.
      const bool restarted = arch::restart_interrupted_switch(ucontext);
      // The thread-local storage is this thread's own (a raw clone may
      // share its creator's) when the registered id is this one.
      const bool own_copy = registered_thread_id() == me;
      // The interrupted code's PKRU differs from what pkeys last set: it is
      // itself a signal handler (whose sigreturn will restore the older
      // value) or it wrote PKRU behind pkeys' back. The edit may not last:
      // the change is reported missed and stays owed, so the thread is
      // signalled again until a handler finds the copy true. The copy
      // learns the value the interrupted code resumes with.
      if (own_copy && !restarted && pkru != pkeys_thread_pkru) outcome = unsure_state(gen);
      const std::uint32_t edited = (pkru & ~mask) | bits;
      if (!arch::set_frame_pkru(ucontext, edited)) break;
      if (own_copy)
        pkeys_thread_pkru = outcome == done_state(gen) ? (pkeys_thread_pkru & ~mask) | bits : edited;
    }
    if (slot.state.compare_exchange_strong(expected, outcome, std::memory_order_acq_rel) &&
        g_outstanding.fetch_sub(1, std::memory_order_acq_rel) == 1)
      sys::raw_syscall(SYS_futex, reinterpret_cast<long>(&g_outstanding), FUTEX_WAKE_PRIVATE, 1);
    break;
  }
  errno = saved_errno;
}

std::chrono::milliseconds configured_timeout() {
  if (const char* s = std::getenv("PKEYS_SYNC_TIMEOUT_MS")) {
    const long ms = std::atol(s);
    if (ms > 0) return std::chrono::milliseconds(ms);
  }
  return std::chrono::milliseconds(200);
}

bool has_program_handler(int sig) noexcept {
  struct sigaction old {};
  if (::sigaction(sig, nullptr, &old) != 0) return true;
  return (old.sa_flags & SA_SIGINFO) || (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN);
}

// Chooses the signal and installs the handler once; afterwards checks that
// the program has not replaced it. Under threads_mutex().
int ensure_signal_locked() noexcept {
  if (g_signal != 0) {
    struct sigaction now {};
    if (::sigaction(g_signal, nullptr, &now) != 0) return -errno;
    return (now.sa_flags & SA_SIGINFO) && now.sa_sigaction == on_rights_signal ? 0 : -EBUSY;
  }
  int sig = 0;
  if (const char* s = std::getenv("PKEYS_SIGNAL"); s && *s) {
    sig = std::atoi(s);
    if (sig < SIGRTMIN || sig > SIGRTMAX) return -EINVAL;
    if (has_program_handler(sig)) return -EBUSY;
  } else {
    // Highest first, leaving SIGRTMAX to programs that count down from it.
    for (int s = SIGRTMAX - 1; s >= SIGRTMIN && sig == 0; --s)
      if (!has_program_handler(s)) sig = s;
    if (sig == 0) return -EAGAIN;
  }
  struct sigaction sa {};
  sa.sa_sigaction = on_rights_signal;
  sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
  sigfillset(&sa.sa_mask);
  arch::init_signal_frame_layout();
  if (::sigaction(sig, &sa, nullptr) != 0) return -errno;
  g_signal = sig;
  return 0;
}

// Whether `t` must be signalled for `change`: a thread pkeys does not know
// always; a known one when it missed an earlier change, or when its rights
// on the key differ.
bool needs(const RightsChange& change, const OtherThread& t) noexcept {
  if (!t.pkru || t.pending_mask != 0) return true;
  if (change.key < 0) return false;
  const std::uint32_t pkru = __atomic_load_n(t.pkru, __ATOMIC_ACQUIRE);
  return pkeys_pkru_rights(pkru, change.key) != change.rights;
}

void note_missed(std::vector<pid_t>* missed, pid_t tid) noexcept {
  // Reserved before the lock was taken: never allocates under it.
  if (missed && missed->size() < missed->capacity()) missed->push_back(tid);
}

// Signals targets [first, last) and waits for them. Under threads_mutex().
int signal_and_wait(RightsChange change, int first, int last, bool named, std::vector<pid_t>* missed) {
  if (first == last) return 0;
  if (int r = ensure_signal_locked(); r < 0) return r;
  const std::uint32_t gen = ++g_generation;
  g_slot_count.store(0, std::memory_order_release);
  g_request.store(gen, std::memory_order_release);
  const std::uint32_t key_mask = change.key < 0 ? 0 : 3u << PKEYS_PKRU_SHIFT(change.key);
  const std::uint32_t key_bits = change.key < 0 ? 0 : (change.rights & 3u) << PKEYS_PKRU_SHIFT(change.key);
  const int n = last - first;
  for (int i = 0; i < n; ++i) {
    const OtherThread& t = g_targets[first + i];
    const std::uint32_t mask = key_mask | t.pending_mask;
    const std::uint32_t bits = (t.pending_bits & ~key_mask) | key_bits;
    g_slots[i].change.store((std::uint64_t{mask} << 32) | bits, std::memory_order_relaxed);
    g_slots[i].state.store(pending_state(gen), std::memory_order_relaxed);
    g_slots[i].tid.store(t.tid, std::memory_order_relaxed);
  }
  g_outstanding.store(n, std::memory_order_relaxed);
  g_slot_count.store(n, std::memory_order_release);

  int result = 0;
  auto give_up = [&](int i) {  // true if this call took the slot out of the count
    std::uint64_t expected = pending_state(gen);
    if (!g_slots[i].state.compare_exchange_strong(expected, abandoned_state(gen), std::memory_order_acq_rel))
      return false;
    g_outstanding.fetch_sub(1, std::memory_order_acq_rel);
    return true;
  };
  for (int i = 0; i < n; ++i) {
    const long r = raw_tgkill(g_slots[i].tid.load(std::memory_order_relaxed), g_signal);
    if (r == 0 || !give_up(i)) continue;
    if (r == -ESRCH) {  // gone
      if (named) result = -ESRCH;
      continue;
    }
    // Not queued (EAGAIN: the user's RLIMIT_SIGPENDING is used up): the
    // thread keeps its old rights, and the caller must hear of it.
    note_missed(missed, g_slots[i].tid.load(std::memory_order_relaxed));
    if (result == 0) result = -ETIMEDOUT;
  }

  const auto deadline = std::chrono::steady_clock::now() + configured_timeout();
  for (;;) {
    const int left = g_outstanding.load(std::memory_order_acquire);
    if (left <= 0) break;
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) break;
    // Short sleeps, so that a target that exits is noticed.
    const auto wait = std::min<std::chrono::nanoseconds>(deadline - now, std::chrono::milliseconds(10));
    timespec ts{0, static_cast<long>(wait.count())};
    sys::raw_syscall(SYS_futex, reinterpret_cast<long>(&g_outstanding), FUTEX_WAIT_PRIVATE, left,
                     reinterpret_cast<long>(&ts));
    if (g_outstanding.load(std::memory_order_acquire) <= 0) break;
    for (int i = 0; i < n; ++i) {
      if (g_slots[i].state.load(std::memory_order_acquire) != pending_state(gen)) continue;
      const pid_t tid = g_slots[i].tid.load(std::memory_order_relaxed);
      if ((raw_tgkill(tid, 0) != 0 || thread_exited_locked(tid)) && give_up(i) && named) result = -ESRCH;
    }
  }
  for (int i = 0; i < n; ++i) {
    if (give_up(i) || g_slots[i].state.load(std::memory_order_acquire) == unsure_state(gen)) {
      note_missed(missed, g_slots[i].tid.load(std::memory_order_relaxed));
      if (result == 0) result = -ETIMEDOUT;
    }
    // What a registered thread missed reaches it with the next change (or
    // pkeys_sync_threads); what it applied is no longer owed.
    const OtherThread& t = g_targets[first + i];
    if (!t.pkru) continue;
    const std::uint64_t change_i = g_slots[i].change.load(std::memory_order_relaxed);
    if (g_slots[i].state.load(std::memory_order_acquire) == done_state(gen))
      clear_missed_locked(t.tid);
    else
      note_missed_locked(t.tid, static_cast<std::uint32_t>(change_i >> 32), static_cast<std::uint32_t>(change_i));
  }
  return result;
}

int apply_locked(RightsChange change, pid_t tid, std::vector<pid_t>* missed) {
  if (change.still_valid && !change.still_valid(change.key)) return -EINVAL;
  const pid_t self = current_thread_id();
  int result = 0;
  if (tid != kOtherThreads) {
    if (tid == self) return -ESRCH;  // the backend changes its own thread itself
    if (!find_thread_locked(tid, &g_targets[0])) return -ESRCH;
    if (needs(change, g_targets[0])) result = signal_and_wait(change, 0, 1, true, missed);
  } else {
    int n = other_threads_locked(self, g_targets, kMaxTargets);
    if (n < 0) return n;
    int m = 0;
    for (int i = 0; i < n; ++i)
      if (needs(change, g_targets[i])) g_targets[m++] = g_targets[i];
    result = signal_and_wait(change, 0, m, false, missed);
    // Threads started while it ran are not registered yet (they wait for
    // this lock): the kernel's count finds them. Until none is new.
    while (result == 0 && m > 0 && unregistered_threads_possible_locked()) {
      const int reached = m;
      int fresh = reached;
      n = other_threads_locked(self, g_targets + reached, kMaxTargets - reached);
      if (n < 0) return n;
      for (int i = reached; i < reached + n; ++i) {
        const OtherThread t = g_targets[i];
        if (t.pkru) continue;  // registered: its rights were looked at
        bool seen = false;
        for (int j = 0; j < reached && !seen; ++j) seen = g_targets[j].tid == t.tid;
        if (!seen) g_targets[fresh++] = t;
      }
      if (fresh == reached) break;
      result = signal_and_wait(change, reached, fresh, false, missed);
      m = fresh;
    }
  }
  if (change.include_self && change.key >= 0 && result != -EBUSY && result != -EAGAIN)
    pkeys_pkru_set_rights(change.key, change.rights);
  return result;
}

}  // namespace

int apply_in_threads(RightsChange change, pid_t tid, std::vector<pid_t>* missed) {
  const int saved_errno = errno;
  if (missed) {
    missed->clear();
    missed->reserve(64 + static_cast<std::size_t>(registered_thread_count()));
  }
  int result;
  {
    std::lock_guard lock(threads_mutex());
    result = apply_locked(change, tid, missed);
  }
  errno = saved_errno;
  return result;
}

int sync_signal() noexcept {
  std::lock_guard lock(threads_mutex());
  const int r = ensure_signal_locked();
  return r < 0 ? r : g_signal;
}

bool is_live_thread(pid_t tid) noexcept {
  std::lock_guard lock(threads_mutex());
  OtherThread t;
  return find_thread_locked(tid, &t);
}

}  // namespace pkeys::backend
