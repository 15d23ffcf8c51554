// SPDX-License-Identifier: MIT
// Many threads allocating, tagging, switching rights, unmapping and freeing
// at once: no error, no lost record. Runs under ThreadSanitizer too.
#include <gtest/gtest.h>

#include <sys/mman.h>

#include <atomic>
#include <cerrno>
#include <thread>
#include <vector>

#include "pkeys/pkeys.h"
#include "probe.hpp"

using namespace pkeys_test;

TEST(Concurrency, ThreadsShareTheKeyTableSafely) {
  constexpr int kThreads = 6;
  constexpr int kRounds = 200;
  std::atomic<int> failures{0}, rounds_done{0};
  std::atomic<int> first_errno{0};
  auto fail = [&] {
    int none = 0;
    first_errno.compare_exchange_strong(none, errno);
    ++failures;
  };
  std::vector<ScopedThread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kRounds; ++i) {
        const int k = pkey_alloc(0, 0);
        if (k < 0) {
          if (errno != ENOSPC) fail();
          continue;  // all keys busy in other threads right now
        }
        void* p = ::mmap(nullptr, 2 * page_size(), PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
          fail();
          continue;
        }
        bool ok = pkey_mprotect(p, 2 * page_size(), PROT_READ | PROT_WRITE, k) == 0;
        ok = ok && pkey_set(k, PKEY_DISABLE_WRITE) == 0 && pkey_get(k) == PKEY_DISABLE_WRITE;
        ok = ok && pkey_set(k, 0) == 0;
        if (ok) static_cast<volatile char*>(p)[0] = 1;  // granted: must not fault
        ok = ok && pkeys_free_strict(k) == -1 && errno == EBUSY;
        ok = ok && ::munmap(p, 2 * page_size()) == 0 && pkey_free(k) == 0;
        if (!ok) fail();
        ++rounds_done;
      }
    });
  }
  for (auto& t : threads) t.join();
  errno = first_errno;
  EXPECT_EQ(failures.load(), 0) << "the first with " << errno_str();
  EXPECT_GT(rounds_done.load(), kThreads * kRounds / 2);
}
