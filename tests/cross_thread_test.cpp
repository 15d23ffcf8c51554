// SPDX-License-Identifier: MIT
// Changing other threads' rights, where the signal handshake
// (src/backend/thread_signal.cpp) can go wrong: a signal that cannot be
// queued, a change racing a free, a change landing between another
// thread's RDPKRU and WRPKRU, threads born inside a scope, system calls
// that a signal interrupts for good, a program that takes the signal,
// threads that are gone, and waiting while holding the library's lock.
//
// Most of this is about per-thread rights (x86-pku, in the PKU lane); on
// a backend whose rights are process-wide the test says so and skips.
// Races run a bounded number of rounds and stop at the first bad one. No
// assertion depends on time: where a wait stands in for "blocked", the
// thread's state in /proc says it is.
#include <gtest/gtest.h>

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "pkeys/pkeys.h"
#include "pkeys/pkeys.hpp"
#include "pkeys/pkru.h"
#include "probe.hpp"
#include "worker.hpp"

using namespace pkeys_test;

namespace {

// Per-thread rights in PKRU: what most tests here are about.
bool pku_per_thread() { return per_thread_rights() && hardware_backend(); }
#define SKIP_WITHOUT_PER_THREAD_RIGHTS()                                                    \
  do {                                                                                       \
    if (!pku_per_thread())                                                                   \
      GTEST_SKIP() << "backend " << pkeys_backend()                                          \
                   << " keeps rights process-wide (no PKEYS_CAP_PER_THREAD_RIGHTS): no other " \
                      "thread's register to reach";                                          \
  } while (0)

// The signal pkeys uses for cross-thread changes, as far as the test can
// know it before pkeys says: PKEYS_SIGNAL, or SIGRTMAX-1.
int default_sync_signal() {
  if (const char* s = std::getenv("PKEYS_SIGNAL")) {
    const int sig = std::atoi(s);
    if (sig >= SIGRTMIN && sig <= SIGRTMAX) return sig;
  }
  return SIGRTMAX - 1;
}

// The scheduler state letter of a thread of this process ('S' sleeping,
// 'R' running, ...), from /proc/self/task/TID/stat; 0 when it is gone.
char thread_state(pid_t tid) {
  std::ifstream in("/proc/self/task/" + std::to_string(tid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto paren = stat.rfind(')');
  if (paren == std::string::npos || paren + 2 >= stat.size()) return 0;
  return stat[paren + 2];
}

// Whether thread `tid` sleeps in one of the system calls `nrs`: as
// /proc/self/task/TID/syscall says (in_syscall), else from its state alone
// (the caller knows which call the thread is about to make).
bool sleeps_in(pid_t tid, std::initializer_list<long> nrs) {
  for (long nr : nrs) {
    const std::optional<bool> in = in_syscall(tid, nr);
    if (!in) return thread_state(tid) == 'S';
    if (*in) return thread_state(tid) == 'S';
  }
  return false;
}

// Real-time signals cannot be queued while this lives: the soft
// RLIMIT_SIGPENDING is 0 (the hard limit is kept, so that an unprivileged
// process can restore the soft one). tgkill of a real-time signal then
// fails with EAGAIN. The handshake's bound is short meanwhile: no thread
// answers late, the only other one cannot be reached.
class NoSignalQueue {
 public:
  NoSignalQueue() : timeout_("PKEYS_SYNC_TIMEOUT_MS", "100") {
    ok_ = ::getrlimit(RLIMIT_SIGPENDING, &old_) == 0;
    rlimit none = old_;
    none.rlim_cur = 0;
    ok_ = ok_ && ::setrlimit(RLIMIT_SIGPENDING, &none) == 0;
  }
  ~NoSignalQueue() { restore(); }
  NoSignalQueue(const NoSignalQueue&) = delete;
  NoSignalQueue& operator=(const NoSignalQueue&) = delete;
  bool ok() const { return ok_; }
  // Why the premise fails, for ASSERT_TRUE(full.ready()) << full.why_not().
  bool ready() const { return ok_ && refuses(); }
  std::string why_not() const {
    return ok_ ? "a real-time signal was still queued" : "setrlimit(RLIMIT_SIGPENDING): " + errno_str();
  }
  void restore() {
    if (ok_) ::setrlimit(RLIMIT_SIGPENDING, &old_);
    ok_ = false;
  }
  // Whether a real-time signal really cannot be queued now, the premise
  // of every test that uses this: one to the calling thread, blocked there
  // meanwhile (and taken off again should it have been queued after all).
  static bool refuses() {
    const int sig = SIGRTMIN + 2;  // not pkeys' (SIGRTMAX-1 unless PKEYS_SIGNAL says)
    sigset_t one, old;
    sigemptyset(&one);
    sigaddset(&one, sig);
    pthread_sigmask(SIG_BLOCK, &one, &old);
    const long r = ::syscall(SYS_tgkill, ::getpid(), gettid_(), sig);
    const int e = errno;
    if (r == 0) {
      siginfo_t si;
      const timespec zero{0, 0};
      (void)::sigtimedwait(&one, &si, &zero);
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    return r == -1 && e == EAGAIN;
  }

 private:
  ScopedEnv timeout_;
  rlimit old_{};
  bool ok_ = false;
};

// A fresh key on which `holder` set read-write itself (the others have no
// access): -1 when pkey_alloc failed, -2 when the holder did not get it.
int key_read_write_in(Worker& holder) {
  const int k = pkey_alloc(0, PKEY_DISABLE_ACCESS);
  if (k < 0) return -1;
  holder.run([&] { EXPECT_EQ(pkey_set(k, 0), 0) << errno_str(); });
  return holder.rights(k) == 0 ? k : -2;
}

// Allocates keys until pkey_alloc fails; returns them. `err` gets the errno
// of the failure (ENOSPC when the numbers ran out).
std::vector<int> allocate_all(int& err) {
  std::vector<int> keys;
  for (int i = 0; i < 64; ++i) {
    const int k = pkey_alloc(0, PKEY_DISABLE_ACCESS);
    if (k < 0) {
      err = errno;
      return keys;
    }
    keys.push_back(k);
  }
  err = 0;
  return keys;
}

std::string list(const std::vector<int>& v) {
  std::string s;
  for (int x : v) s += (s.empty() ? "" : " ") + std::to_string(x);
  return "[" + s + "]";
}

// wait_until without sleeping: for handshakes inside a race, where a
// millisecond's sleep per round would cost more than the round. The limit
// only stops a hang.
bool spin_until(const std::function<bool()>& done) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!done()) {
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::yield();
  }
  return true;
}

// Pins the calling thread to one CPU and names another, while it lives
// (where at least two are allowed), so that a thread placed on the other
// runs truly alongside the caller, not in turns with it.
class TwoCpus {
 public:
  TwoCpus() {
    if (pthread_getaffinity_np(pthread_self(), sizeof old_, &old_) != 0) return;
    int first = -1;
    for (int c = 0; c < CPU_SETSIZE; ++c) {
      if (!CPU_ISSET(c, &old_)) continue;
      if (first < 0) {
        first = c;
        continue;
      }
      cpu_set_t mine;
      CPU_ZERO(&mine);
      CPU_SET(first, &mine);
      CPU_ZERO(&other_);
      CPU_SET(c, &other_);
      pinned_ = pthread_setaffinity_np(pthread_self(), sizeof mine, &mine) == 0;
      return;
    }
  }
  ~TwoCpus() {
    if (pinned_) pthread_setaffinity_np(pthread_self(), sizeof old_, &old_);
  }
  TwoCpus(const TwoCpus&) = delete;
  TwoCpus& operator=(const TwoCpus&) = delete;
  // Thread attributes for a thread on the other CPU (defaults when unpinned).
  void place(pthread_attr_t& attr) const {
    if (pinned_) pthread_attr_setaffinity_np(&attr, sizeof other_, &other_);
  }

 private:
  cpu_set_t old_{}, other_{};
  bool pinned_ = false;
};

}  // namespace

// ThreadSanitizer's own pthread_create must run first in a new thread, so
// pkeys does not interpose it there (src/capi/interpose_threads.cpp): every
// thread is one pkeys did not start, and is always signalled.
#if defined(__SANITIZE_THREAD__)
#define SKIP_WITHOUT_THREAD_REGISTRY() \
  GTEST_SKIP() << "a ThreadSanitizer build: pkeys does not interpose pthread_create, so it signals every thread"
#else
#define SKIP_WITHOUT_THREAD_REGISTRY() (void)0
#endif

// --- 1. a signal that cannot be queued ------------------------------------
//
// tgkill of a real-time signal fails with EAGAIN when the queue is full
// (RLIMIT_SIGPENDING). A thread pkeys could not signal has not applied the
// change, and must not be counted as if it had.

TEST(CrossThread, SetAllReportsAThreadItCouldNotSignalAsMissed) {
  SKIP_WITHOUT_PER_THREAD_RIGHTS();
  Worker holder;
  const int k = key_read_write_in(holder);
  ASSERT_GT(k, 0) << "a key the holder set read-write itself: " << k << ", " << errno_str();
  int r = 0, err = 0, missed_count = 0;
  pid_t missed[8] = {};
  unsigned holder_after = 0;
  {
    NoSignalQueue full;
    ASSERT_TRUE(full.ready()) << full.why_not();
    errno = 0;
    r = pkey_set_all(k, PKEY_DISABLE_ACCESS);
    err = errno;
    missed_count = pkeys_sync_missed(missed, 8);
    holder_after = holder.register_rights(k);  // before the queue is usable again
  }
  EXPECT_EQ(holder_after, 0u) << "the holder was never signalled, so it still has read-write";
  EXPECT_TRUE(r == -1 && err == ETIMEDOUT)
      << "pkey_set_all returned " << r << " (errno " << err << " " << std::strerror(err)
      << ") although thread " << holder.tid() << " could not be signalled (tgkill: EAGAIN) and "
      << "still holds read-write on key " << k << "; expected -1 with ETIMEDOUT";
  EXPECT_EQ(missed_count, 1) << "pkeys_sync_missed must list the thread it could not signal";
  if (missed_count >= 1) {
    EXPECT_EQ(missed[0], holder.tid());
  }
  // The queue is usable again: the change now reaches the holder.
  ASSERT_EQ(pkey_set_all(k, PKEY_DISABLE_ACCESS), 0) << sync_error();
  EXPECT_EQ(holder.rights(k), PKEY_DISABLE_ACCESS);
  EXPECT_EQ(pkey_free(k), 0) << errno_str();
}

TEST(CrossThread, FreeKeepsANumberAThreadStillHoldsRightsOnOutOfCirculation) {
  SKIP_WITHOUT_PER_THREAD_RIGHTS();
  Worker holder;
  const int k = key_read_write_in(holder);
  ASSERT_GT(k, 0) << "a key the holder set read-write itself: " << k << ", " << errno_str();
  int free_result = 0, free_err = 0, alloc_err = 0;
  std::vector<int> got;
  unsigned holder_rights = 0;
  {
    NoSignalQueue full;
    ASSERT_TRUE(full.ready()) << full.why_not();
    errno = 0;
    free_result = pkey_free(k);
    free_err = errno;
    // Every number pkey_alloc hands out now: k must not be one of them
    // while the holder still has read-write on it.
    got = allocate_all(alloc_err);
    holder_rights = holder.register_rights(k);
  }
  // The queue is usable again; the numbers go back (their frees reach
  // every thread now).
  for (int x : got) EXPECT_EQ(pkey_free(x), 0) << "key " << x << ": " << errno_str();
  EXPECT_EQ(alloc_err, ENOSPC) << "pkey_alloc stopped with another error";
  const bool handed_out = std::find(got.begin(), got.end(), k) != got.end();
  EXPECT_FALSE(handed_out && holder_rights != PKEY_DISABLE_ACCESS)
      << "pkey_free(" << k << ") returned " << free_result << " (errno " << free_err
      << ") and pkey_alloc then handed out " << k << " again (got " << list(got) << ") while thread "
      << holder.tid() << " still had rights " << holder_rights << " on it (it could not be signalled): "
      << "the next owner's pages are open to that thread";
  if (free_result != 0) {
    // Refused (and then nothing changed): the key is still ours.
    EXPECT_EQ(pkey_query(k), 0) << "pkey_free failed but the key is gone: " << errno_str();
    ASSERT_EQ(pkey_free(k), 0) << errno_str();
  }
  // Once the threads can be reached, the number comes back, and the holder
  // has no right left on it.
  int again_err = 0;
  std::vector<int> again = allocate_all(again_err);
  const bool back = std::find(again.begin(), again.end(), k) != again.end();
  const unsigned holder_now = holder.register_rights(k);
  for (int x : again) EXPECT_EQ(pkey_free(x), 0) << "key " << x << ": " << errno_str();
  EXPECT_TRUE(back) << "key " << k << " never came back once threads could be signalled (got "
                    << list(again) << ", then errno " << again_err << ")";
  EXPECT_EQ(holder_now, unsigned{PKEY_DISABLE_ACCESS}) << "the holder kept rights on freed key " << k;
}

// pkeys_sync_threads may return 0 without signalling a thread whose rights
// are as pkeys last set them; but the holder here missed a change (it could
// not be signalled), so returning 0 would call it synchronised when it is
// not.
TEST(CrossThread, SyncThreadsDoesNotCallAThreadThatMissedAChangeSynchronised) {
  SKIP_WITHOUT_PER_THREAD_RIGHTS();
  Worker holder;
  const int k = key_read_write_in(holder);
  ASSERT_GT(k, 0) << "a key the holder set read-write itself: " << k << ", " << errno_str();
  int sync_result = 0, sync_err = 0;
  unsigned holder_rights = 0;
  {
    NoSignalQueue full;
    ASSERT_TRUE(full.ready()) << full.why_not();
    (void)pkey_set_all(k, PKEY_DISABLE_ACCESS);  // cannot reach the holder
    errno = 0;
    sync_result = pkeys_sync_threads();
    sync_err = errno;
    holder_rights = holder.register_rights(k);
  }
  EXPECT_FALSE(sync_result == 0 && holder_rights != PKEY_DISABLE_ACCESS)
      << "pkeys_sync_threads returned 0 while thread " << holder.tid() << " still has rights "
      << holder_rights << " on key " << k << ", not the access-disabled pkey_set_all set "
      << "(it could not be signalled)";
  if (sync_result != 0) {
    EXPECT_EQ(sync_err, ETIMEDOUT);
  }
  ASSERT_EQ(pkey_set_all(k, PKEY_DISABLE_ACCESS), 0) << sync_error();
  EXPECT_EQ(pkey_free(k), 0) << errno_str();
}

// --- 2. pkey_set_all racing pkey_free -------------------------------------

TEST(CrossThread, SetAllRacingAFreeNeverGrantsTheNumbersNextOwner) {
  SKIP_WITHOUT_PER_THREAD_RIGHTS();
  constexpr int kRounds = 100;
  Worker idle;
  std::atomic<int> key{-1};
  std::atomic<int> round{0}, stopped_round{0}, calls{0}, other_errors{0}, other_errno{0};
  std::atomic<bool> stop{false}, quit{false};
  // The racer calls pkey_set_all(key, 0) in a loop during a round (EINVAL
  // once the key is freed), and says when it has stopped.
  ScopedThread racer(
      [&] {
        for (int seen = 0;;) {
          while (round.load() == seen && !quit) std::this_thread::yield();
          if (quit) return;
          seen = round.load();
          while (!stop) {
            errno = 0;
            if (pkey_set_all(key, 0) != 0 && errno != EINVAL) {
              other_errno = errno;
              ++other_errors;
            }
            ++calls;
          }
          stopped_round = seen;
        }
      },
      [&] {
        stop = true;
        quit = true;
      });
  int bad_round = 0, bad_key = -1, bad_rights = 0;
  int r = 1;
  for (; r <= kRounds; ++r) {
    const int k = pkey_alloc(0, 0);
    ASSERT_GT(k, 0) << "round " << r << ": " << errno_str();
    key = k;
    stop = false;
    const int calls_before = calls;
    round = r;
    ASSERT_TRUE(wait_until([&] { return calls > calls_before; })) << "the racer never called";
    ASSERT_EQ(pkey_free(k), 0) << "round " << r << ": " << errno_str();
    stop = true;
    ASSERT_TRUE(wait_until([&] { return stopped_round == r; }));
    // The racer is quiet now: nobody grants anything on the next key.
    const int next = pkey_alloc(0, 0);
    ASSERT_GT(next, 0) << "round " << r << ": " << errno_str();
    const int idle_rights = idle.rights(next);
    EXPECT_EQ(pkey_free(next), 0) << errno_str();
    if (idle_rights != PKEY_DISABLE_ACCESS) {
      bad_round = r, bad_key = next, bad_rights = idle_rights;
      break;
    }
  }
  EXPECT_EQ(bad_round, 0) << "round " << bad_round << " of " << kRounds << ": key " << bad_key
                          << " (the freed key was " << key.load() << ") was allocated anew, yet "
                          << "thread " << idle.tid() << " had rights " << bad_rights
                          << " on it instead of PKEY_DISABLE_ACCESS: a pkey_set_all(" << key.load()
                          << ", 0) that began before the free was applied after it";
  EXPECT_EQ(other_errors.load(), 0) << "pkey_set_all failed otherwise than with EINVAL, errno "
                                    << other_errno.load();
  if (bad_round == 0) std::printf("[          ] %d rounds, %d pkey_set_all calls in the race\n", kRounds, calls.load());
}

// --- 3. a change landing between RDPKRU and WRPKRU ------------------------
//
// Thread B switches its rights on k2 again and again; main sets k1 in
// every thread. If the handler edits B's saved PKRU between B's read of
// PKRU and its write, B's write puts k1's old rights back: the change is
// lost although pkey_set_all returned 0.

namespace {

// Runs the race with `flip` as B's loop body (it switches B's rights on
// another key); `kRounds` rounds of pkey_set_all(k1, 0) and
// pkey_set_all(k1, PKEY_DISABLE_ACCESS), each checked in B.
void expect_no_lost_update(int k1, const std::function<void()>& flip) {
  // Under the PKU lane's TCG a signal rarely lands inside that window (the
  // time after each WRPKRU, which flushes the emulated TLB, dwarfs it):
  // about once in 1,000 rounds on Linux 6.12, once in 1,000 to 4,000 on
  // 6.1. A round takes 0.5 to 10 ms there. (Pinning B to a CPU of its own
  // made rounds steady but the window rarer still on 6.1.)
  constexpr int kRounds = 5000;
  std::atomic<bool> stop{false};
  std::atomic<int> asked{0}, answered{0};
  std::atomic<unsigned> seen{0};
  std::atomic<long> flips{0};
  ScopedThread b(
      [&] {
        while (!stop.load(std::memory_order_relaxed)) {
          flip();
          flips.fetch_add(1, std::memory_order_relaxed);
          const int q = asked.load(std::memory_order_acquire);
          if (q != answered.load(std::memory_order_relaxed)) {
            seen.store(pkeys_pkru_rights(pkeys_rdpkru(), k1), std::memory_order_relaxed);
            answered.store(q, std::memory_order_release);
          }
        }
      },
      [&] { stop = true; });
  ASSERT_TRUE(wait_until([&] { return flips > 0; }));
  int bad_round = 0;
  unsigned bad_want = 0, bad_seen = 0;
  int q = 0;
  for (int r = 1; r <= kRounds && bad_round == 0; ++r) {
    for (unsigned want : {0u, unsigned{PKEY_DISABLE_ACCESS}}) {
      ASSERT_EQ(pkey_set_all(k1, want), 0) << "round " << r << ": " << sync_error();
      asked.store(++q, std::memory_order_release);
      ASSERT_TRUE(spin_until([&] { return answered.load(std::memory_order_acquire) == q; }));
      if (seen.load(std::memory_order_relaxed) != want) {
        bad_round = r, bad_want = want, bad_seen = seen;
        break;
      }
    }
  }
  stop = true;
  b.join();
  EXPECT_EQ(bad_round, 0) << "round " << bad_round << " of " << kRounds << ": pkey_set_all(" << k1
                          << ", " << bad_want << ") returned 0, but the thread switching its rights "
                          << "on another key then had rights " << bad_seen << " on key " << k1
                          << ": its WRPKRU wrote back the value it had read before the change";
  if (bad_round == 0)
    std::printf("[          ] %d rounds; the other thread switched %ld times\n", kRounds, flips.load());
}

}  // namespace

TEST(CrossThread, SetAllIsNotLostToAConcurrentPkeySet) {
  SKIP_WITHOUT_PER_THREAD_RIGHTS();
  const int k1 = pkey_alloc(0, PKEY_DISABLE_ACCESS), k2 = pkey_alloc(0, 0);
  ASSERT_GT(k1, 0) << errno_str();
  ASSERT_GT(k2, 0) << errno_str();
  expect_no_lost_update(k1, [&] {
    (void)pkey_set(k2, 0);
    (void)pkey_set(k2, PKEY_DISABLE_WRITE);
  });
  EXPECT_EQ(pkey_free(k1), 0) << errno_str();
  EXPECT_EQ(pkey_free(k2), 0) << errno_str();
}

TEST(CrossThread, SetAllIsNotLostToAConcurrentInlineKeySet) {
  SKIP_WITHOUT_PER_THREAD_RIGHTS();
  const int k1 = pkey_alloc(0, PKEY_DISABLE_ACCESS);
  ASSERT_GT(k1, 0) << errno_str();
  {
    auto k2 = pkeys::key::allocate(pkeys::rights::read_write());
    ASSERT_TRUE(k2.has_value()) << k2.error().message();
    const pkeys::key& key2 = *k2;
    expect_no_lost_update(k1, [&] {
      (void)key2.set(pkeys::rights::read_write());
      (void)key2.set(pkeys::rights::read_only());
    });
  }
  EXPECT_EQ(pkey_free(k1), 0) << errno_str();
}

// --- the thread's copy of its rights -------------------------------------
//
// pkeys signals only the threads whose rights differ, by the copy of each
// thread's PKRU that its switches keep. pkey_alloc gives the caller rights
// through the kernel, not a switch: a free from another thread must still
// reach the thread that allocated the key.

TEST(CrossThread, AFreeReachesTheThreadThatAllocatedTheKey) {
  SKIP_WITHOUT_PER_THREAD_RIGHTS();
  Worker owner;
  int key = -1;
  owner.run([&] { key = pkey_alloc(0, 0); });
  ASSERT_GT(key, 0) << errno_str();
  ASSERT_EQ(owner.register_rights(key), 0u) << "the allocating thread starts with read-write";
  ASSERT_EQ(pkey_free(key), 0) << errno_str();
  EXPECT_EQ(owner.register_rights(key), static_cast<unsigned>(PKEY_DISABLE_ACCESS))
      << "the thread that allocated key " << key << " kept rights on it after another thread freed it";
}

// --- 4. threads born inside a scope ------------------------------------
//
// A new thread starts with its creator's PKRU. Created inside a vkey's
// scope (or a code region's write scope), it must not keep the scope's
// rights once the scope is closed: it never opened one.

TEST(CrossThread, AThreadCreatedInsideAVkeyScopeHasNoRightsOnceItEnds) {
  const int v = pkeys_vkey_create(PKEY_DISABLE_ACCESS);
  ASSERT_GT(v, 0) << errno_str();
  void* p = map_pages(1);
  ASSERT_EQ(pkeys_vkey_mprotect(p, page_size(), PROT_READ | PROT_WRITE, v), 0) << errno_str();
  std::atomic<bool> go{false};
  Outcome seen;
  {
    ASSERT_EQ(pkeys_vkey_begin(v, 0), 0) << errno_str();
    ScopedThread born([&] {
      while (!go) std::this_thread::yield();
      seen = probe(p, Access::read);
    }, [&] { go = true; });
    const int ended = pkeys_vkey_end(v);
    go = true;
    born.join();
    ASSERT_EQ(ended, 0) << errno_str();
  }
  EXPECT_TRUE(seen.faulted) << "a thread created inside pkeys_vkey_begin(" << v << ", 0) could still "
                            << "read the vkey's page after pkeys_vkey_end: " << describe(seen);
  EXPECT_FALSE(can_read(p)) << "the creator itself, after the scope";
  ::munmap(p, page_size());
  EXPECT_EQ(pkeys_vkey_destroy(v), 0) << errno_str();
}

TEST(CrossThread, AThreadCreatedInsideACodeWriteScopeCannotWriteOnceItEnds) {
  pkeys_code_region code;
  ASSERT_EQ(pkeys_code_region_create(&code, 1), 0) << errno_str();
  std::atomic<bool> go{false};
  bool could_write = true;
  {
    ASSERT_EQ(pkeys_code_write_begin(&code), 0) << errno_str();
    // Probed in this process: a forked child has no write view.
    ScopedThread born([&] {
      while (!go) std::this_thread::yield();
      could_write = can_write_here(code.write);
    }, [&] { go = true; });
    const int ended = pkeys_code_write_end(&code);
    go = true;
    born.join();
    ASSERT_EQ(ended, 0) << errno_str();
  }
  EXPECT_FALSE(could_write) << "a thread created inside pkeys_code_write_begin could still write the "
                            << "region's write view after pkeys_code_write_end";
  EXPECT_FALSE(can_write_here(code.write)) << "the creator itself, after the scope";
  EXPECT_EQ(pkeys_code_region_destroy(&code), 0) << errno_str();
}

// --- 5. no stray EINTR ---------------------------------------------------
//
// poll, epoll_wait, select and nanosleep are never restarted after a
// signal handler, whatever SA_RESTART says: they fail with EINTR. A thread
// whose rights need no change must not be signalled, so a program that
// never asked for signals sees no EINTR.

namespace {

// The cross-thread calls that need no change in a thread whose rights on
// the keys involved are already access-disabled: allocating and freeing
// keys it never had rights on (hardware), and the bare handshake.
void calls_that_change_nothing_elsewhere() {
  if (pku_per_thread()) {
    for (int i = 0; i < 10; ++i) {
      const int k = pkey_alloc(0, 0);  // the others: access disabled
      ASSERT_GT(k, 0) << errno_str();
      ASSERT_EQ(pkey_free(k), 0) << errno_str();
    }
  }
  EXPECT_EQ(pkeys_sync_threads(), 0) << sync_error();
}

// A thread blocks in `wait(fd)` on a pipe's read end; once it sleeps in one
// of the system calls `nrs`, main makes the calls above, then writes the
// byte. The wait must return `expected` (readable), not -1 with EINTR.
void expect_no_eintr(const char* what, std::initializer_list<long> nrs,
                     const std::function<int(int fd)>& wait, int expected) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0) << errno_str();
  std::atomic<pid_t> tid{0};
  std::atomic<bool> returned{false};
  int result = 0, err = 0;
  {
    ScopedThread waiter(
        [&] {
          tid = gettid_();
          errno = 0;
          result = wait(fds[0]);
          err = errno;
          returned = true;
        },
        [&] { (void)!::write(fds[1], "x", 1); });
    ASSERT_TRUE(wait_until([&] { return tid != 0; }));
    ASSERT_TRUE(wait_until([&] { return returned || sleeps_in(tid, nrs); }))
        << what << " never blocked";
    ASSERT_FALSE(returned) << what << " returned before anything happened: " << result;
    calls_that_change_nothing_elsewhere();
    ASSERT_EQ(::write(fds[1], "x", 1), 1) << errno_str();
    waiter.join();
  }
  EXPECT_EQ(result, expected) << what << " returned " << result << " with errno " << err << " "
                              << std::strerror(err) << ": a thread that needed no change was "
                              << "interrupted by pkeys' signal";
  ::close(fds[0]);
  ::close(fds[1]);
}

}  // namespace

TEST(CrossThread, PollIsNotInterrupted) {
  SKIP_WITHOUT_THREAD_REGISTRY();
  expect_no_eintr("poll", {SYS_poll, SYS_ppoll}, [](int fd) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, -1);
  }, 1);
}

TEST(CrossThread, EpollWaitIsNotInterrupted) {
  SKIP_WITHOUT_THREAD_REGISTRY();
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  ASSERT_GE(ep, 0) << errno_str();
  expect_no_eintr("epoll_wait", {SYS_epoll_wait, SYS_epoll_pwait
#ifdef SYS_epoll_pwait2
                                 , SYS_epoll_pwait2
#endif
                                },
                  [ep](int fd) {
                    epoll_event ev{};
                    ev.events = EPOLLIN;
                    ev.data.fd = fd;
                    if (::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) return -2;
                    epoll_event out{};
                    return ::epoll_wait(ep, &out, 1, -1);
                  }, 1);
  ::close(ep);
}

TEST(CrossThread, SelectIsNotInterrupted) {
  SKIP_WITHOUT_THREAD_REGISTRY();
  expect_no_eintr("select", {SYS_select, SYS_pselect6}, [](int fd) {
    fd_set readable;
    FD_ZERO(&readable);
    FD_SET(fd, &readable);
    return ::select(fd + 1, &readable, nullptr, nullptr, nullptr);
  }, 1);
}

TEST(CrossThread, NanosleepIsNotInterrupted) {
  SKIP_WITHOUT_THREAD_REGISTRY();
  // A sleep cannot be woken without a signal: it lasts long enough for
  // main's calls to happen inside it, and it counts only if they did.
  constexpr int kSleepSeconds = 3;
  std::atomic<pid_t> tid{0};
  std::atomic<bool> returned{false}, calls_done{false};
  bool calls_done_inside = false;
  int result = 0, err = 0;
  {
    ScopedThread sleeper([&] {
      tid = gettid_();
      timespec t{kSleepSeconds, 0};
      errno = 0;
      result = ::nanosleep(&t, &t);
      err = errno;
      calls_done_inside = calls_done;
      returned = true;
    });
    ASSERT_TRUE(wait_until([&] { return tid != 0; }));
    ASSERT_TRUE(wait_until([&] { return returned || sleeps_in(tid, {SYS_nanosleep, SYS_clock_nanosleep}); }))
        << "nanosleep never blocked";
    calls_that_change_nothing_elsewhere();
    calls_done = true;
  }  // joined: the sleep ends
  EXPECT_EQ(result, 0) << "nanosleep returned " << result << " with errno " << err << " "
                       << std::strerror(err) << ": a thread that needed no change was interrupted "
                       << "by pkeys' signal";
  if (result == 0 && !calls_done_inside)
    GTEST_SKIP() << "the " << kSleepSeconds << " s sleep ended before main's calls did: inconclusive "
                 << "on a machine this slow";
}

// --- 6. the program's own handler on the signal -------------------------
//
// Each scenario runs in a fresh process (a death test in the "threadsafe"
// style re-executes the test binary), so that pkeys has made no
// cross-thread change there yet and its threads stay inside it.

namespace {

std::atomic<int> g_program_handler_calls{0};
void program_handler(int, siginfo_t*, void*) { g_program_handler_calls.fetch_add(1); }

bool install_program_handler(int sig) {
  struct sigaction sa {};
  sa.sa_sigaction = program_handler;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  return ::sigaction(sig, &sa, nullptr) == 0;
}

// printf-style failure in a child: the message reaches the parent's report.
int child_fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
int child_fail(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fputc('\n', stderr);
  return 1;
}

// The program took PKEYS_SIGNAL before pkeys' first cross-thread change.
// Every cycle runs even when its pkey_set_thread fails, so that a report
// says both what failed first and when the key numbers ran out.
int program_owns_the_signal_first() {
  const int sig = default_sync_signal();
  if (!install_program_handler(sig)) return child_fail("sigaction(%d): %s", sig, std::strerror(errno));
  Worker other;
  std::string problems;
  auto note = [&](const std::string& what) {
    if (problems.size() < 2000) problems += what + "\n";
  };
  for (int i = 1; i <= 20; ++i) {
    const std::string cycle = "cycle " + std::to_string(i) + " of 20: ";
    const int k = pkey_alloc(0, PKEY_DISABLE_ACCESS);
    if (k < 0) {
      note(cycle + "pkey_alloc: " + std::strerror(errno) + " (the numbers went into a quarantine that never ends)");
      break;
    }
    if (pkey_set_thread(other.tid(), k, 0) != 0)
      note(cycle + "pkey_set_thread(other, " + std::to_string(k) + ", 0): " + std::strerror(errno));
    else if (other.rights(k) != 0)
      note(cycle + "the other thread did not get read-write");
    if (pkey_free(k) != 0) note(cycle + "pkey_free(" + std::to_string(k) + "): " + std::strerror(errno));
  }
  if (pkeys_sync_threads() != 0) note(std::string("pkeys_sync_threads: ") + std::strerror(errno));
  if (g_program_handler_calls != 0)
    note("pkeys sent its signal to the program's handler on " + std::to_string(sig) + " (" +
         std::to_string(g_program_handler_calls.load()) + " calls)");
#ifdef PKEYS_HAVE_SYNC_SIGNAL
  const int used = pkeys_sync_signal();
  if (used < 0 || used == sig)
    note("pkeys_sync_signal() = " + std::to_string(used) + ": the program's signal is " + std::to_string(sig));
#endif
  if (problems.empty()) return 0;
  return child_fail("with the program's handler on signal %d before pkeys' first cross-thread change:\n%s", sig,
                    problems.c_str());
}

// The program takes the signal over after pkeys' first cross-thread change.
int program_takes_the_signal_later() {
  Worker other;
  const int k = pkey_alloc(0, PKEY_DISABLE_ACCESS);
  if (k < 0) return child_fail("pkey_alloc: %s", std::strerror(errno));
  // pkeys' handler goes in here.
  if (pku_per_thread() ? pkey_set_thread(other.tid(), k, 0) != 0 : pkeys_sync_threads() != 0)
    return child_fail("the first cross-thread change: %s", std::strerror(errno));
#ifdef PKEYS_HAVE_SYNC_SIGNAL
  const int sig = pkeys_sync_signal();
  if (sig <= 0) return child_fail("pkeys_sync_signal() = %d: %s", sig, std::strerror(errno));
#else
  const int sig = default_sync_signal();
#endif
  if (!install_program_handler(sig)) return child_fail("sigaction(%d): %s", sig, std::strerror(errno));
  // A wait that cannot end well ends soon.
  ::setenv("PKEYS_SYNC_TIMEOUT_MS", "500", 1);
  if (pku_per_thread()) {
    errno = 0;
    int r = pkey_set_thread(other.tid(), k, PKEY_DISABLE_ACCESS);
    if (r != -1 || errno != EBUSY)
      return child_fail("pkey_set_thread after the program took signal %d: returned %d, errno %d (%s); "
                        "expected -1 with EBUSY", sig, r, errno, std::strerror(errno));
    if (other.rights(k) != 0) return child_fail("the failed pkey_set_thread changed the thread's rights");
    errno = 0;
    r = pkey_set_all(k, PKEY_DISABLE_ACCESS);
    if (r != -1 || errno != EBUSY)
      return child_fail("pkey_set_all after the program took signal %d: returned %d, errno %d (%s); "
                        "expected -1 with EBUSY", sig, r, errno, std::strerror(errno));
  }
#ifdef PKEYS_HAVE_SYNC_SIGNAL
  errno = 0;
  const int now = pkeys_sync_signal();
  if (now != -1 || errno != EBUSY)
    return child_fail("pkeys_sync_signal() after the program took it: %d, errno %d; expected -1 with EBUSY", now,
                      errno);
#endif
  if (g_program_handler_calls != 0)
    return child_fail("pkeys sent its signal %d to the program's handler (%d calls)", sig,
                      g_program_handler_calls.load());
  return 0;
}

}  // namespace

// A fresh process for the scenario: the death test style that re-executes
// the binary (and is put back afterwards).
class FreshProcess {
 public:
  FreshProcess() : old_(GTEST_FLAG_GET(death_test_style)) { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
  ~FreshProcess() { GTEST_FLAG_SET(death_test_style, old_); }
  FreshProcess(const FreshProcess&) = delete;
  FreshProcess& operator=(const FreshProcess&) = delete;

 private:
  std::string old_;
};

TEST(CrossThread, AProgramHandlerOnTheSignalBeforePkeysUsesItCostsNoKeys) {
  SKIP_WITHOUT_THREAD_REGISTRY();
  FreshProcess fresh;
  EXPECT_EXIT(::_exit(program_owns_the_signal_first()), ::testing::ExitedWithCode(0), "");
}

TEST(CrossThread, AProgramTakingTheSignalOverIsNoticed) {
  SKIP_WITHOUT_THREAD_REGISTRY();
#ifndef PKEYS_HAVE_SYNC_SIGNAL
  SKIP_WITHOUT_PER_THREAD_RIGHTS();
#endif
  FreshProcess fresh;
  EXPECT_EXIT(::_exit(program_takes_the_signal_later()), ::testing::ExitedWithCode(0), "");
}

// --- 7. a thread that is gone ------------------------------------------

TEST(CrossThread, SetThreadOnAJoinedThreadFailsWithEsrch) {
  SKIP_WITHOUT_THREAD_REGISTRY();
  constexpr int kTries = 100;
  const int k = pkey_alloc(0, 0);
  ASSERT_GT(k, 0) << errno_str();
  // The thread exits on the other CPU while this one sees it joined:
  // its exit is not over before this thread runs again.
  TwoCpus cpus;
  pthread_attr_t attr;
  ASSERT_EQ(pthread_attr_init(&attr), 0);
  cpus.place(attr);
  int bad_try = 0, bad_result = 0, bad_errno = 0, create_error = 0;
  for (int i = 1; i <= kTries; ++i) {
    pid_t tid = 0;
    pthread_t thread;
    create_error = pthread_create(&thread, &attr, [](void* out) -> void* {
      *static_cast<pid_t*>(out) = gettid_();
      return nullptr;
    }, &tid);
    if (create_error != 0) break;
    // Joined the moment the kernel says the thread is done (its tid word
    // cleared), not a scheduler round trip later: while it may still be
    // on its way out.
    while (pthread_tryjoin_np(thread, nullptr) == EBUSY) {
    }
    errno = 0;
    const int r = pkey_set_thread(tid, k, 0);
    if (r != -1 || errno != ESRCH) {
      bad_try = i, bad_result = r, bad_errno = errno;
      break;
    }
  }
  pthread_attr_destroy(&attr);
  EXPECT_EQ(create_error, 0) << "pthread_create: " << std::strerror(create_error);
  EXPECT_EQ(bad_try, 0) << "try " << bad_try << " of " << kTries << ": pkey_set_thread on a joined "
                        << "thread returned " << bad_result << " (errno " << bad_errno << " "
                        << std::strerror(bad_errno) << "); expected -1 with ESRCH";
  EXPECT_EQ(pkey_free(k), 0) << errno_str();
}

// --- 8. no waiting under the library's lock ------------------------------
//
// pkey_free resets every other thread's rights and waits (up to
// PKEYS_SYNC_TIMEOUT_MS) for a thread that blocks the signal. Meanwhile
// other threads' calls that need no handshake must go on.

TEST(CrossThread, AFreeWaitingForABlockedThreadDoesNotStopOtherCalls) {
  SKIP_WITHOUT_PER_THREAD_RIGHTS();
  ScopedEnv timeout("PKEYS_SYNC_TIMEOUT_MS", "60000");
  const pid_t main_tid = gettid_();
  const int k = pkey_alloc(0, 0);
  ASSERT_GT(k, 0) << errno_str();
  void* page = map_pages(1);
  std::atomic<bool> blocking{false}, pending{false}, main_calling{false}, release{false};
  std::atomic<bool> broke_hang{false}, unblocked{false}, free_returned{false};
  int free_result = -2, free_err = 0;
  // The blocker holds read-write on k and blocks every real-time signal;
  // it sees pkeys' signal pending, and unblocks it when main is done (or
  // when main has sat in a futex for seconds: a hang breaker, which makes
  // the test fail below rather than wait for the timeout).
  ScopedThread blocker(
      [&] {
        pkey_set(k, 0);
        sigset_t rt;
        sigemptyset(&rt);
        for (int s = SIGRTMIN; s <= SIGRTMAX; ++s) sigaddset(&rt, s);
        pthread_sigmask(SIG_BLOCK, &rt, nullptr);
        blocking = true;
        int main_in_futex = 0;
        while (!release) {
          sigset_t now;
          sigpending(&now);
          for (int s = SIGRTMIN; s <= SIGRTMAX; ++s) pending = pending || sigismember(&now, s);
          if (main_calling && sleeps_in(main_tid, {SYS_futex})) {
            if (++main_in_futex >= 300) {  // 3 s
              broke_hang = true;
              break;
            }
          } else {
            main_in_futex = 0;
          }
          ::usleep(10000);
        }
        unblocked = true;  // from here on pkey_free may finish
        pthread_sigmask(SIG_UNBLOCK, &rt, nullptr);
      },
      [&] { release = true; });
  ASSERT_TRUE(wait_until([&] { return blocking.load(); }));
  ScopedThread freer([&] {
    errno = 0;
    free_result = pkey_free(k);
    free_err = errno;
    free_returned = true;
  }, [&] { release = true; });
  ASSERT_TRUE(wait_until([&] { return pending || free_returned; }))
      << "pkey_free never signalled the blocker";
  ASSERT_FALSE(free_returned) << "pkey_free returned " << free_result << " without waiting for the blocker";
  // pkey_free waits for the blocker now. Calls that need no other thread:
  main_calling = true;
  const int k2 = pkey_alloc(0, 0);
  const int k2_err = errno;
  const int mprotect_result = pkey_mprotect(page, page_size(), PROT_READ, -1);
  const int mprotect_err = errno;
  const int rights = k2 > 0 ? pkey_get(k2) : 0;
  // Returned while the blocker still blocks the signal, so while pkey_free
  // still waits (free_returned alone could lag behind: the freer may not
  // have run again yet).
  const bool free_could_finish = unblocked, free_was_done = free_returned;
  main_calling = false;
  release = true;
  blocker.join();
  freer.join();
  EXPECT_FALSE(free_could_finish || free_was_done)
      << "pkey_alloc/pkey_mprotect/pkey_get in another thread returned only once pkey_free could stop "
      << "waiting for a thread that blocks the signal"
      << (broke_hang ? " (the blocker unblocked it after main sat in a futex for 3 s)" : "")
      << (free_was_done ? "; pkey_free had returned" : "");
  EXPECT_GT(k2, 0) << "pkey_alloc: errno " << k2_err;
  EXPECT_EQ(mprotect_result, 0) << "pkey_mprotect(-1): errno " << mprotect_err;
  EXPECT_EQ(rights, 0);
  EXPECT_EQ(free_result, 0) << "pkey_free, once the blocker took the signal: errno " << free_err;
  if (k2 > 0) {
    EXPECT_EQ(pkey_free(k2), 0) << errno_str();
  }
  ::munmap(page, page_size());
}
