// SPDX-License-Identifier: MIT
// Test helpers: touch memory in a forked child and report whether the
// access faulted, and how; helpers to map pages; and the means for tests
// to fail cleanly: errno in messages, threads that are always joined,
// environment changes that are undone; EXPECT_ERRNO for calls that must
// fail with a given errno.
#pragma once

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/types.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>

#include "fault_probe.hpp"

namespace pkeys_test {

// The fork/pipe/SIGSEGV probe that pkeyctl demo uses too
// (tools/common/fault_probe.hpp): probe(addr, access) makes one access in a
// forked child, which inherits the calling thread's rights, and reports
// whether and how it faulted.
using pkeys_probe::Access;
using pkeys_probe::Outcome;
using pkeys_probe::probe;

inline bool can_read(void* addr) { return !probe(addr, Access::read).faulted; }
inline bool can_write(void* addr) { return !probe(addr, Access::write).faulted; }

// The same access made in this process, for mappings a forked child does
// not have (MADV_DONTFORK): a fault is caught (SIGSEGV, SIGBUS) and
// recovered with pkeys_siglongjmp, which restores the thread's rights. A
// write stores the byte it read. Not thread-safe: one probe at a time.
bool can_access_here(void* addr, Access access);
inline bool can_read_here(void* addr) { return can_access_here(addr, Access::read); }
inline bool can_write_here(void* addr) { return can_access_here(addr, Access::write); }

std::string describe(const Outcome& o);

// An anonymous private mapping of `pages` pages, read-write.
void* map_pages(std::size_t pages);
std::size_t page_size();

bool hardware_backend();
bool per_thread_rights();

// "errno 110 ETIMEDOUT (Connection timed out)": streamed into the message of
// an assertion on a call that returns -1 (`ASSERT_EQ(f(), 0) << errno_str()`).
std::string errno_str();

// errno_str() and, after a cross-thread change (pkey_set_thread, pkey_set_all,
// pkeys_sync_threads) from this thread, each thread it missed with its
// scheduler state and blocked signals, so that a timeout says who and why.
std::string sync_error();

// The cross-thread handshake's bound: PKEYS_SYNC_TIMEOUT_MS or the library's
// default. The PKU lane raises it, since QEMU's TCG is slow.
std::chrono::milliseconds sync_timeout();

// Waits, polling, until `done()` holds or `limit` has passed; returns
// whether it held. For waits that are not what a test checks: the limit
// only stops a hang.
bool wait_until(const std::function<bool()>& done,
                std::chrono::milliseconds limit = std::chrono::seconds(120));

// Whether thread `tid` of this process sleeps in system call `nr`
// (/proc/self/task/TID/syscall); nullopt where the kernel cannot tell.
std::optional<bool> in_syscall(pid_t tid, long nr);

// What a call returned and the errno it left (errno cleared before it), for
// EXPECT_ERRNO: the result is read before anything else can touch errno.
struct ErrnoResult {
  long long value;  // the int result, or the pointer's bits (MAP_FAILED: -1)
  int err;
  bool pointer;
};

template <bool Pointer, class F>
ErrnoResult call_for_errno(F&& f) {
  errno = 0;
  const auto r = f();
  const int e = errno;
  static_assert(std::is_pointer_v<decltype(r)> == Pointer,
                "EXPECT_ERRNO takes a call returning an int, EXPECT_MAP_ERRNO one returning a pointer");
  if constexpr (Pointer)
    return {static_cast<long long>(reinterpret_cast<std::uintptr_t>(r)), e, true};
  else
    return {static_cast<long long>(r), e, false};
}

// Success when `got` is the failure value (-1, or MAP_FAILED) with errno
// `expected`; else a message naming the result and both errnos.
::testing::AssertionResult check_errno(const char* call, int expected, ErrnoResult got);

// Sets (or with nullptr unsets) an environment variable for one scope and
// restores the previous value, or its absence, on leaving it: a test never
// changes the setting the suite was started with (the PKU lane's).
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value);
  ~ScopedEnv();
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_;
  std::optional<std::string> old_;
};

// A thread that is joined whenever it leaves scope, also when a failed
// ASSERT returns early: a joinable std::thread would call std::terminate
// and take the rest of the suite with it. `release`, when given, runs
// first in that case and must let the thread finish (set the flag it
// waits for, write the byte it reads). join() joins without it.
class ScopedThread {
 public:
  ScopedThread() = default;
  template <class F>
  explicit ScopedThread(F&& body, std::function<void()> release = {})
      : release_(std::move(release)), thread_(std::forward<F>(body)) {}
  ScopedThread(ScopedThread&&) noexcept = default;
  ScopedThread& operator=(ScopedThread&&) = delete;
  ~ScopedThread() {
    if (!thread_.joinable()) return;
    if (release_) release_();
    thread_.join();
  }
  void join() { thread_.join(); }

 private:
  std::function<void()> release_;
  std::thread thread_;
};

}  // namespace pkeys_test

// EXPECT_ERRNO(E, call): `call` (run with errno cleared) returns -1 and sets
// errno to E; on a mismatch the message names what it returned and both
// errnos. EXPECT_MAP_ERRNO: the same for calls that return MAP_FAILED.
// Both take further `<< context`; the ASSERT_ forms end the test.
#define PKEYS_ERRNO_CHECK_(E, call, pointer, on_failure)                                    \
  GTEST_AMBIGUOUS_ELSE_BLOCKER_                                                               \
  if (const ::testing::AssertionResult pkeys_errno_ar = ::pkeys_test::check_errno(             \
          #call, (E), ::pkeys_test::call_for_errno<pointer>([&] { return (call); })))        \
    ;                                                                                         \
  else                                                                                        \
    on_failure << pkeys_errno_ar.message()
#define EXPECT_ERRNO(E, call) PKEYS_ERRNO_CHECK_(E, call, false, ADD_FAILURE())
#define ASSERT_ERRNO(E, call) PKEYS_ERRNO_CHECK_(E, call, false, FAIL())
#define EXPECT_MAP_ERRNO(E, call) PKEYS_ERRNO_CHECK_(E, call, true, ADD_FAILURE())
