// SPDX-License-Identifier: MIT
#include "backend/thread_signal.hpp"

#include <dirent.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "arch/x86_64/signal_frame.hpp"
#include "arch/x86_64/syscall.hpp"
#include "pkeys/pkru.h"

namespace pkeys::backend {
namespace {

// One target thread of the current request. state: generation << 1 while
// pending, | 1 once applied.
struct Slot {
  std::atomic<pid_t> tid{0};
  std::atomic<std::uint64_t> state{0};
};

constexpr int kMaxSlots = 32768;
Slot g_slots[kMaxSlots];
std::atomic<int> g_slot_count{0};
// The current request in one word, so a handler never mixes two requests:
// generation (32 bits) | key (16) | rights (16).
std::atomic<std::uint64_t> g_request{0};
std::atomic<int> g_acks{0};  // futex word: bumped by every acknowledgement
std::mutex g_mutex;          // one request at a time
int g_signal = 0;
constexpr int kNoKey = 0xffff;
// How long the requester polls before it sleeps on the futex: a woken
// target answers in microseconds, while a futex wake-up costs a second
// scheduling round trip (about 100 us on a VM).
constexpr std::chrono::microseconds kSpin{100};

constexpr std::uint64_t pending_state(std::uint32_t gen) { return std::uint64_t{gen} << 1; }
constexpr std::uint64_t done_state(std::uint32_t gen) { return (std::uint64_t{gen} << 1) | 1; }

pid_t raw_gettid() noexcept { return static_cast<pid_t>(sys::raw_syscall(SYS_gettid)); }
long raw_tgkill(pid_t tid, int sig) noexcept {
  return sys::raw_syscall(SYS_tgkill, ::getpid(), tid, sig);
}

// Applies the request to the interrupted code's PKRU; a request without a
// key (a bare handshake) changes nothing.
bool apply_to_frame(void* ucontext, int key, unsigned rights) noexcept {
  if (key == kNoKey) return true;
  std::uint32_t pkru;
  return arch::frame_pkru(ucontext, &pkru) &&
         arch::set_frame_pkru(ucontext, pkeys_pkru_with(pkru, key, rights));
}

void on_rights_signal(int, siginfo_t*, void* ucontext) {
  const int saved_errno = errno;
  const std::uint64_t request = g_request.load(std::memory_order_acquire);
  const auto gen = static_cast<std::uint32_t>(request >> 32);
  const int key = static_cast<int>((request >> 16) & 0xffff);
  const unsigned rights = static_cast<unsigned>(request & 0xffff);
  const pid_t me = raw_gettid();
  const int n = g_slot_count.load(std::memory_order_acquire);
  for (int i = 0; i < n; ++i) {
    if (g_slots[i].tid.load(std::memory_order_acquire) != me) continue;
    std::uint64_t expected = pending_state(gen);
    if (g_slots[i].state.load(std::memory_order_acquire) == expected &&
        apply_to_frame(ucontext, key, rights) &&
        g_slots[i].state.compare_exchange_strong(expected, done_state(gen),
                                                 std::memory_order_acq_rel)) {
      g_acks.fetch_add(1, std::memory_order_release);
      sys::raw_syscall(SYS_futex, reinterpret_cast<long>(&g_acks), FUTEX_WAKE_PRIVATE, 1);
    }
    break;
  }
  errno = saved_errno;
}

int configured_signal() {
  if (const char* s = std::getenv("PKEYS_SIGNAL")) {
    const int sig = std::atoi(s);
    if (sig >= SIGRTMIN && sig <= SIGRTMAX) return sig;
  }
  return SIGRTMAX - 1;
}

std::chrono::milliseconds configured_timeout() {
  if (const char* s = std::getenv("PKEYS_SYNC_TIMEOUT_MS")) {
    const long ms = std::atol(s);
    if (ms > 0) return std::chrono::milliseconds(ms);
  }
  return std::chrono::milliseconds(200);
}

// Installs the handler once; refuses a signal the program already handles.
int install_handler() {
  if (g_signal != 0) return 0;
  const int sig = configured_signal();
  struct sigaction old {};
  if (::sigaction(sig, nullptr, &old) != 0) return -errno;
  if ((old.sa_flags & SA_SIGINFO) || (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN))
    return -EBUSY;
  struct sigaction sa {};
  sa.sa_sigaction = on_rights_signal;
  sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
  sigfillset(&sa.sa_mask);
  if (::sigaction(sig, &sa, nullptr) != 0) return -errno;
  arch::init_signal_frame_layout();
  g_signal = sig;
  return 0;
}

// The thread ids of this process, from /proc/self/task, kept open so that
// rescans during one request cost a seek and a read.
class TaskDir {
 public:
  TaskDir() : dir_(::opendir("/proc/self/task")) {}
  ~TaskDir() {
    if (dir_) ::closedir(dir_);
  }
  TaskDir(const TaskDir&) = delete;
  TaskDir& operator=(const TaskDir&) = delete;
  void list(std::vector<pid_t>& out) {
    out.clear();
    if (!dir_) return;
    ::rewinddir(dir_);
    while (dirent* e = ::readdir(dir_))
      if (e->d_name[0] >= '0' && e->d_name[0] <= '9') out.push_back(std::atoi(e->d_name));
  }

 private:
  DIR* dir_;
};

bool is_thread_of_self(pid_t tid) noexcept { return raw_tgkill(tid, 0) == 0; }

}  // namespace

int thread_rights_signal() noexcept { return g_signal; }

std::mutex& thread_signal_mutex() noexcept { return g_mutex; }

int apply_in_threads(RightsChange change, pid_t tid, std::vector<pid_t>* missed) {
  const int saved_errno = errno;
  std::lock_guard lock(g_mutex);
  if (missed) missed->clear();
  if (tid != kOtherThreads && (tid <= 0 || !is_thread_of_self(tid))) return -ESRCH;
  if (int r = install_handler(); r < 0) return r;

  static std::uint32_t generation = 0;
  const std::uint32_t gen = ++generation;
  g_slot_count.store(0, std::memory_order_release);
  const int key = change.key < 0 ? kNoKey : change.key;
  g_request.store((std::uint64_t{gen} << 32) | (std::uint64_t(key & 0xffff) << 16) |
                      (change.rights & 0xffff),
                  std::memory_order_release);

  const pid_t self = raw_gettid();
  const auto deadline = std::chrono::steady_clock::now() + configured_timeout();
  TaskDir task_dir;
  std::vector<pid_t> threads;
  std::vector<int> open;  // slot indices not yet applied or gone
  int slots = 0;
  auto known = [&](pid_t t) {
    for (int i = 0; i < slots; ++i)
      if (g_slots[i].tid.load(std::memory_order_relaxed) == t) return true;
    return false;
  };
  auto add_target = [&](pid_t t) -> int {
    if (slots == kMaxSlots) return -EAGAIN;
    g_slots[slots].state.store(pending_state(gen), std::memory_order_relaxed);
    g_slots[slots].tid.store(t, std::memory_order_release);
    g_slot_count.store(slots + 1, std::memory_order_release);
    if (raw_tgkill(t, g_signal) == 0) open.push_back(slots);
    ++slots;
    return 0;
  };

  int result = 0;
  for (bool first = true;; first = false) {
    // Find targets: the named thread once, or every thread not yet seen.
    if (tid != kOtherThreads) {
      if (first && (result = add_target(tid)) < 0) break;
    } else {
      task_dir.list(threads);
      for (pid_t t : threads)
        if (t != self && !known(t) && (result = add_target(t)) < 0) break;
      if (result < 0) break;
    }
    // Wait for every open target to apply or exit: poll briefly while fewer
    // targets are left than CPUs (polling must not starve them), then sleep.
    static const long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
    const auto spin_until = std::chrono::steady_clock::now() + kSpin;
    while (!open.empty()) {
      const int acks = g_acks.load(std::memory_order_acquire);
      std::erase_if(open, [&](int i) {
        return g_slots[i].state.load(std::memory_order_acquire) == done_state(gen);
      });
      if (open.empty()) break;
      const auto now = std::chrono::steady_clock::now();
      if (now < spin_until && static_cast<long>(open.size()) < cpus) {
        for (int i = 0; i < 64; ++i) __builtin_ia32_pause();
        continue;
      }
      std::erase_if(open, [&](int i) {
        return !is_thread_of_self(g_slots[i].tid.load(std::memory_order_relaxed));
      });
      if (open.empty() || now >= deadline) break;
      // Short waits so exited threads are noticed too.
      const auto wait = std::min<std::chrono::nanoseconds>(deadline - now, std::chrono::milliseconds(2));
      timespec ts{0, static_cast<long>(wait.count())};
      sys::raw_syscall(SYS_futex, reinterpret_cast<long>(&g_acks), FUTEX_WAIT_PRIVATE, acks,
                       reinterpret_cast<long>(&ts));
    }
    if (!open.empty()) {
      result = -ETIMEDOUT;
      if (missed)
        for (int i : open) missed->push_back(g_slots[i].tid.load(std::memory_order_relaxed));
      break;
    }
    if (tid != kOtherThreads) break;
    // Done when a fresh scan finds no thread that was not reached.
    task_dir.list(threads);
    bool fresh = false;
    for (pid_t t : threads) fresh |= t != self && !known(t);
    if (!fresh) break;
    if (std::chrono::steady_clock::now() >= deadline) {
      result = -ETIMEDOUT;
      if (missed)
        for (pid_t t : threads)
          if (t != self && !known(t)) missed->push_back(t);
      break;
    }
  }
  errno = saved_errno;
  return result;
}

}  // namespace pkeys::backend
