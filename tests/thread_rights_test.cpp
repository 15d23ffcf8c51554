// SPDX-License-Identifier: MIT
// Rights of other threads: pkey_set_thread, pkey_set_all,
// PKEY_ALLOC_ALL_THREADS, and the bounded wait. Only the test of the
// timeout itself depends on the wait's length: the others must pass however
// slow the machine is (the PKU lane raises PKEYS_SYNC_TIMEOUT_MS).
#include <gtest/gtest.h>

#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "pkeys/pkeys.h"
#include "probe.hpp"
#include "worker.hpp"

using namespace pkeys_test;

namespace {

struct TaggedPage {
  explicit TaggedPage(int key) : p(map_pages(1)) {
    EXPECT_EQ(pkey_mprotect(p, page_size(), PROT_READ | PROT_WRITE, key), 0) << errno_str();
  }
  ~TaggedPage() { ::munmap(p, page_size()); }
  void* p;
};

}  // namespace

TEST(SetThread, GrantsAThreadThatExistedBeforeTheKey) {
  Worker worker;
  const int k = pkey_alloc(0, 0);
  ASSERT_GT(k, 0) << errno_str();
  {
    TaggedPage page(k);
    if (per_thread_rights()) {
      EXPECT_EQ(worker.rights(k), PKEY_DISABLE_ACCESS) << "the kernel's default for other threads";
      EXPECT_FALSE(worker.can(page.p, Access::read));
    }
    ASSERT_EQ(pkey_set_thread(worker.tid(), k, PKEY_DISABLE_WRITE), 0) << sync_error();
    EXPECT_EQ(worker.rights(k), PKEY_DISABLE_WRITE);
    EXPECT_TRUE(worker.can(page.p, Access::read));
    EXPECT_FALSE(worker.can(page.p, Access::write));
    ASSERT_EQ(pkey_set_thread(worker.tid(), k, 0), 0) << sync_error();
    EXPECT_TRUE(worker.can(page.p, Access::write));
    EXPECT_EQ(pkey_set_thread(gettid_(), k, 0), 0) << "the caller may name itself; " << errno_str();
  }
  EXPECT_EQ(pkey_free(k), 0) << errno_str();
}

TEST(SetAll, GrantsEveryThreadAndTheCaller) {
  Worker a, b;
  const int k = pkey_alloc(0, PKEY_DISABLE_ACCESS);
  ASSERT_GT(k, 0) << errno_str();
  {
    TaggedPage page(k);
    ASSERT_EQ(pkey_set_all(k, 0), 0) << sync_error();
    EXPECT_EQ(pkey_get(k), 0);
    EXPECT_EQ(a.rights(k), 0);
    EXPECT_EQ(b.rights(k), 0);
    EXPECT_TRUE(a.can(page.p, Access::write));
    EXPECT_TRUE(b.can(page.p, Access::write));
    ASSERT_EQ(pkey_set_all(k, PKEY_DISABLE_ACCESS), 0) << sync_error();
    EXPECT_FALSE(a.can(page.p, Access::read));
    EXPECT_FALSE(can_read(page.p));
    EXPECT_EQ(pkeys_sync_missed(nullptr, 0), 0);
  }
  EXPECT_EQ(pkey_free(k), 0) << errno_str();
}

TEST(SetThread, ChangesOnlyTheTargetKeysBits) {
  Worker worker;
  const int a = pkey_alloc(0, 0), b = pkey_alloc(0, 0);
  ASSERT_GT(a, 0) << errno_str();
  ASSERT_GT(b, 0) << errno_str();
  worker.run([&] {
    EXPECT_EQ(pkey_set(a, PKEY_DISABLE_ACCESS), 0) << errno_str();
    EXPECT_EQ(pkey_set(b, PKEY_DISABLE_WRITE), 0) << errno_str();
  });
  ASSERT_EQ(pkey_set_thread(worker.tid(), b, 0), 0) << sync_error();
  EXPECT_EQ(worker.rights(b), 0);
  EXPECT_EQ(worker.rights(a), PKEY_DISABLE_ACCESS) << "another key's bits were touched";
  EXPECT_EQ(worker.rights(0), 0);
  ASSERT_EQ(pkey_set_all(a, 0), 0) << sync_error();
  EXPECT_EQ(pkey_free(a), 0) << errno_str();
  EXPECT_EQ(pkey_free(b), 0) << errno_str();
}

TEST(SetThread, RejectsBadArguments) {
  const int k = pkey_alloc(0, 0);
  ASSERT_GT(k, 0) << errno_str();
  for (pid_t bad : {pid_t{0}, pid_t{-1}, pid_t{1}, pid_t{0x3fffffff}}) {
    EXPECT_ERRNO(ESRCH, pkey_set_thread(bad, k, 0)) << bad;
  }
  EXPECT_ERRNO(EINVAL, pkey_set_thread(gettid_(), k, 4));
  EXPECT_ERRNO(EINVAL, pkey_set_thread(gettid_(), 0, PKEY_DISABLE_ACCESS));
  EXPECT_ERRNO(EINVAL, pkey_set_all(k + 1 < 16 && pkey_query(k + 1) < 0 ? k + 1 : 15, 0));
  EXPECT_ERRNO(EINVAL, pkey_set_all(k, 8));
  EXPECT_EQ(pkey_free(k), 0) << errno_str();
}

TEST(SetThread, ReachesAThreadBlockedInRead) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0) << errno_str();
  const int k = pkey_alloc(0, PKEY_DISABLE_ACCESS);
  ASSERT_GT(k, 0) << errno_str();
  std::atomic<pid_t> tid{0};
  ssize_t got = 0;
  char c = 0;
  int rights_after = -1;
  ScopedThread reader(
      [&] {
        tid = gettid_();
        got = ::read(fds[0], &c, 1);  // blocks until the byte below
        rights_after = pkey_get(k);
      },
      [&] { (void)!::write(fds[1], "y", 1); });
  ASSERT_TRUE(wait_until([&] { return tid != 0; }));
  // Wait until it sleeps in read(), as the kernel reports; where it cannot
  // tell, a pause makes that likely.
  if (in_syscall(tid, SYS_read).has_value())
    ASSERT_TRUE(wait_until([&] { return in_syscall(tid, SYS_read).value_or(false); }))
        << "the reader never blocked in read()";
  else
    ::usleep(20000);
  ASSERT_EQ(pkey_set_thread(tid, k, PKEY_DISABLE_WRITE), 0) << "returned once applied; " << sync_error();
  ASSERT_EQ(::write(fds[1], "x", 1), 1) << errno_str();
  reader.join();
  EXPECT_EQ(got, 1) << "read() resumed, not interrupted";
  EXPECT_EQ(c, 'x');
  EXPECT_EQ(rights_after, PKEY_DISABLE_WRITE);
  ::close(fds[0]);
  ::close(fds[1]);
  EXPECT_EQ(pkey_free(k), 0) << errno_str();
}

TEST(SetAll, TimesOutOnAThreadThatBlocksTheSignal) {
  if (!per_thread_rights()) GTEST_SKIP() << "backend " << pkeys_backend() << " sets rights process-wide, no handshake";
  // The wait is what this test checks, so it is short; but the reachable
  // thread must still answer within it: a tenth of the suite's setting
  // (the PKU lane's is long), at least 50 ms.
  const auto wait = std::max<std::chrono::milliseconds>(std::chrono::milliseconds(50), sync_timeout() / 10);
  const std::string wait_ms = std::to_string(wait.count());
  const int k = pkey_alloc(0, PKEY_DISABLE_ACCESS);
  ASSERT_GT(k, 0) << errno_str();
  std::atomic<pid_t> tid{0};
  std::atomic<bool> release{false};
  ScopedThread blocker(
      [&] {
        sigset_t all;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, nullptr);
        tid = gettid_();
        while (!release) ::usleep(1000);
      },
      [&] { release = true; });
  Worker other;
  ASSERT_TRUE(wait_until([&] { return tid != 0; }));
  {
    ScopedEnv timeout("PKEYS_SYNC_TIMEOUT_MS", wait_ms.c_str());
    EXPECT_ERRNO(ETIMEDOUT, pkey_set_all(k, 0));
    pid_t missed[8] = {};
    ASSERT_EQ(pkeys_sync_missed(missed, 8), 1) << "with " << wait_ms << " ms: " << sync_error();
    EXPECT_EQ(missed[0], tid.load());
    EXPECT_EQ(other.rights(k), 0) << "reachable threads applied the change";
    EXPECT_EQ(pkey_get(k), 0);
    EXPECT_ERRNO(ETIMEDOUT, pkey_set_thread(tid, k, 0));
  }
  release = true;
  blocker.join();
  EXPECT_EQ(pkey_free(k), 0) << errno_str();
}

TEST(SetAll, ThreadsCreatedMeanwhileDoNotMissIt) {
  const int k = pkey_alloc(0, PKEY_DISABLE_ACCESS);
  ASSERT_GT(k, 0) << errno_str();
  std::atomic<bool> done{false};
  std::atomic<int> wrong{0}, checked{0}, started{0};
  // A spawner keeps creating threads while pkey_set_all runs; every thread
  // alive after it returns must see the new rights.
  ScopedThread spawner(
      [&] {
        std::vector<ScopedThread> kids;
        while (kids.size() < 40) {
          kids.emplace_back([&] {
            ++started;
            while (!done) std::this_thread::yield();
            if (pkey_get(k) != 0) ++wrong;
            ++checked;
          });
          std::this_thread::yield();
        }
      },  // the kids are joined as `kids` goes
      [&] { done = true; });
  ASSERT_TRUE(wait_until([&] { return started >= 5; }));
  ASSERT_EQ(pkey_set_all(k, 0), 0) << sync_error();
  done = true;
  spawner.join();
  EXPECT_EQ(wrong.load(), 0) << "of " << checked.load();
  EXPECT_GT(checked.load(), 0);
  EXPECT_EQ(pkey_free(k), 0) << errno_str();
}

TEST(AllocAllThreads, GivesTheInitialRightsToExistingThreads) {
  Worker worker;
  EXPECT_ERRNO(EINVAL, pkey_alloc(PKEY_ALLOC_ALL_THREADS | 1, 0));
  const int k = pkey_alloc(PKEY_ALLOC_ALL_THREADS, PKEY_DISABLE_WRITE);
  ASSERT_GT(k, 0) << sync_error();
  EXPECT_EQ(pkey_get(k), PKEY_DISABLE_WRITE);
  EXPECT_EQ(worker.rights(k), PKEY_DISABLE_WRITE);
  EXPECT_EQ(pkey_free(k), 0) << errno_str();
  // Without the flag, other threads start with access disabled.
  const int plain = pkey_alloc(0, 0);
  ASSERT_GT(plain, 0) << errno_str();
  if (per_thread_rights()) {
    EXPECT_EQ(worker.rights(plain), PKEY_DISABLE_ACCESS);
  }
  EXPECT_EQ(pkey_free(plain), 0) << errno_str();
}

TEST(SyncThreads, HandshakeReachesEveryThread) {
#if defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "ThreadSanitizer's own background thread blocks every signal: unreachable by design";
#endif
  Worker a, b, c;
  EXPECT_EQ(pkeys_sync_threads(), 0) << sync_error();
  EXPECT_EQ(pkeys_sync_missed(nullptr, 0), 0);
}

// fork() while another thread is inside a handshake (waiting for a thread
// that blocks the signal): the child must not inherit the handshake's lock
// held, on every backend, or its first pkeys_sync_threads never returns.
TEST(SyncThreads, ForkDuringAHandshakeLeavesTheChildAUsableOne) {
#if defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "ThreadSanitizer's own background thread blocks every signal: unreachable by design";
#endif
  // Restored afterwards: the PKU lane's longer bound holds for later tests.
  ScopedEnv timeout("PKEYS_SYNC_TIMEOUT_MS", "1000");
  std::atomic<bool> release{false}, blocking{false};
  std::thread blocker([&] {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    blocking = true;
    while (!release) ::usleep(1000);
  });
  while (!blocking) std::this_thread::yield();
  std::thread syncer([] { (void)pkeys_sync_threads(); });  // waits for the blocker, lock held
  ::usleep(100 * 1000);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::alarm(5);  // a child left with the lock held hangs: SIGALRM ends it
    _exit(pkeys_sync_threads() == 0 ? 0 : 1);
  }
  ASSERT_GT(pid, 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  release = true;
  syncer.join();
  blocker.join();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "the child's handshake " << (WIFSIGNALED(status) ? "hung" : "failed");
}
