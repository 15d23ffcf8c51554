// SPDX-License-Identifier: MIT
// Drop-in compatibility: the sequence of operations and checks of glibc's
// own test of these functions (sysdeps/unix/sysv/linux/tst-pkey.c), and
// those of the kernel's selftests (tools/testing/selftests/mm/
// protection_keys.c) that go through the C ABI, written anew here and run
// against libpkeys on both backends.
//
// Where pkeys differs on purpose the test asserts pkeys' behaviour and
// says which check of the original differs; README's "Where pkeys differs
// from glibc and the kernel, on purpose" lists them all, with the reasons.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <thread>
#include <vector>

#include "pkeys/pkeys.h"
#include "probe.hpp"
#include "worker.hpp"

#ifndef SEGV_PKUERR
#define SEGV_PKUERR 4  // si_code of a protection-key fault (older headers lack it)
#endif

using namespace pkeys_test;

namespace {

// --- one access in this very thread, with a SIGSEGV handler, as glibc's
// test makes it (not in a forked child) ----------------------------------
sigjmp_buf g_fault_jump;
volatile void* g_fault_addr;
volatile int g_fault_code;
volatile int g_fault_si_pkey;
volatile int g_fault_pkeys_key;

void on_fault(int, siginfo_t* si, void*) {
  g_fault_addr = si->si_addr;
  g_fault_code = si->si_code;
  g_fault_si_pkey = si->si_pkey;
  g_fault_pkeys_key = pkeys_fault_pkey(si);
  siglongjmp(g_fault_jump, 1);
}

struct Touch {
  bool allowed;
  int code;        // si_code when it faulted
  int kernel_key;  // the kernel's si_pkey
  int pkeys_key;   // pkeys_fault_pkey's answer
  void* addr;
};

constexpr int kKeys = 3;  // glibc's test: rights 0, PKEY_DISABLE_ACCESS, PKEY_DISABLE_WRITE
std::array<int, kKeys> g_keys{};

// Tries one read or write. A fault leaves the register as the handler had
// it (siglongjmp does not restore PKRU, glibc bug 22396): as glibc's test,
// the rights of the keys under test are put back by hand.
Touch touch(volatile int* addr, bool write) {
  std::array<int, kKeys> saved{};
  for (int i = 0; i < kKeys; ++i) saved[i] = pkey_get(g_keys[i]);
  struct sigaction sa {}, old {};
  sa.sa_sigaction = on_fault;
  sa.sa_flags = SA_SIGINFO | SA_RESETHAND;
  ::sigaction(SIGSEGV, &sa, &old);
  Touch a{true, 0, -1, -1, nullptr};
  if (sigsetjmp(g_fault_jump, 1) == 0) {
    if (write)
      *addr = 3;
    else
      (void)*addr;
  } else {
    a = Touch{false, g_fault_code, g_fault_si_pkey, g_fault_pkeys_key, const_cast<void*>(g_fault_addr)};
    for (int i = 0; i < kKeys; ++i) pkey_set(g_keys[i], static_cast<unsigned>(saved[i]));
  }
  ::sigaction(SIGSEGV, &old, nullptr);
  return a;
}

volatile sig_atomic_t g_usr1_ran;
volatile sig_atomic_t g_usr1_rights_ok;

void on_usr1(int) {
  bool ok = true;
  // glibc accepts both: access revoked in handlers (x86) or inherited.
  for (int i = 0; i < kKeys; ++i) {
    const int r = pkey_get(g_keys[i]);
    ok = ok && (r == PKEY_DISABLE_ACCESS || r == i);
  }
  g_usr1_rights_ok = ok;
  g_usr1_ran = 1;
}

// The rights a thread created now starts with on each key.
std::array<int, kKeys> rights_of_a_new_thread() {
  std::array<int, kKeys> r{};
  std::thread t([&] {
    for (int i = 0; i < kKeys; ++i) r[i] = pkey_get(g_keys[i]);
  });
  t.join();
  return r;
}

class GlibcTstPkey : public ::testing::Test {
 protected:
  void TearDown() override {
    for (volatile int* p : pages_)
      if (p) ::munmap(const_cast<int*>(p), page_size());
    for (int k : g_keys)
      if (k > 0) pkey_free(k);
    g_keys = {};
  }
  // Checks one access of glibc's check_page_access: allowed, or a fault at
  // the page blamed on its key.
  void expect_access(int page, bool write, bool allowed) {
    const Touch a = touch(pages_[page], write);
    EXPECT_EQ(a.allowed, allowed) << "page " << page << (write ? " write" : " read");
    if (a.allowed || allowed) return;
    EXPECT_EQ(a.addr, const_cast<int*>(pages_[page]));
    if (hardware_backend()) {
      EXPECT_EQ(a.code, SEGV_PKUERR);
      EXPECT_EQ(a.kernel_key, g_keys[page]);
    } else {
      // Differs on purpose: the emulation's fault is a plain SEGV_ACCERR
      // (si_pkey 0); pkeys_fault_pkey names the key.
      EXPECT_EQ(a.code, SEGV_ACCERR);
    }
    EXPECT_EQ(a.pkeys_key, g_keys[page]);
  }
  std::array<volatile int*, kKeys> pages_{};
};

TEST_F(GlibcTstPkey, TheSameSequence) {
  // pkey_mprotect with key -1 works like mprotect.
  {
    auto* page = static_cast<int*>(::mmap(nullptr, page_size(), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    ASSERT_NE(page, MAP_FAILED);
    EXPECT_EQ(pkey_mprotect(page, page_size(), PROT_READ | PROT_WRITE, -1), 0) << errno_str();
    *static_cast<volatile int*>(page) = 5;
    EXPECT_EQ(*static_cast<volatile int*>(page), 5);
    ASSERT_EQ(::munmap(page, page_size()), 0);
  }

  Worker early;  // glibc's "delayed thread": exists before the keys

  for (int i = 0; i < kKeys; ++i) {
    g_keys[i] = pkey_alloc(0, static_cast<unsigned>(i));
    ASSERT_GT(g_keys[i], 0) << errno_str();
    EXPECT_EQ(pkey_get(g_keys[i]), i) << "pkey_alloc gives the caller its rights";
  }
  for (int i = 0; i < kKeys; ++i) EXPECT_EQ(pkey_get(g_keys[i]), i);
  for (int i = 0; i < kKeys; ++i) {
    pages_[i] = static_cast<volatile int*>(map_pages(1));
    ASSERT_EQ(pkey_mprotect(const_cast<int*>(pages_[i]), page_size(), PROT_READ | PROT_WRITE, g_keys[i]), 0)
        << errno_str();
  }

  // A thread from before the keys has no access to them, nor does a thread
  // it creates.
  for (int i = 0; i < kKeys; ++i) {
    if (per_thread_rights()) {
      EXPECT_EQ(early.rights(g_keys[i]), PKEY_DISABLE_ACCESS) << "key " << i;
      EXPECT_FALSE(early.can(const_cast<int*>(pages_[i]), Access::read)) << "key " << i;
      EXPECT_FALSE(early.can(const_cast<int*>(pages_[i]), Access::write)) << "key " << i;
    } else {
      // Differs on purpose: the emulation's rights are process-wide.
      EXPECT_EQ(early.rights(g_keys[i]), i) << "key " << i;
    }
  }
  std::array<int, kKeys> nested{};
  early.run([&] { nested = rights_of_a_new_thread(); });
  for (int i = 0; i < kKeys; ++i) EXPECT_EQ(nested[i], per_thread_rights() ? PKEY_DISABLE_ACCESS : i);

  // A new thread inherits the creator's rights.
  const auto inherited = rights_of_a_new_thread();
  for (int i = 0; i < kKeys; ++i) EXPECT_EQ(inherited[i], i) << "key " << i;
  for (int i = 0; i < kKeys; ++i) EXPECT_EQ(pkey_get(g_keys[i]), i);

  // In a signal handler.
  struct sigaction sa {}, old {};
  sa.sa_handler = on_usr1;
  ASSERT_EQ(::sigaction(SIGUSR1, &sa, &old), 0);
  ASSERT_EQ(::raise(SIGUSR1), 0);
  ::sigaction(SIGUSR1, &old, nullptr);
  EXPECT_EQ(g_usr1_ran, 1);
  EXPECT_EQ(g_usr1_rights_ok, 1);

  // Key 0 of the test (rights 0) is writable; the others are not.
  expect_access(0, false, true);
  expect_access(0, true, true);
  for (int i = 1; i < kKeys; ++i) {
    for (int j = 0; j < kKeys; ++j) EXPECT_EQ(pkey_get(g_keys[j]), j);
    const bool readable = (i & PKEY_DISABLE_ACCESS) == 0;
    expect_access(i, false, readable);
    expect_access(i, true, false);
  }

  // Setting this thread's rights grants access, key by key.
  for (int write = 0; write < 2; ++write) {
    for (int allowed = 0; allowed < kKeys; ++allowed) {
      for (int i = 0; i < kKeys; ++i)
        EXPECT_EQ(pkey_set(g_keys[i], i != allowed ? PKEY_DISABLE_ACCESS : write ? 0 : PKEY_DISABLE_WRITE), 0);
      for (int i = 0; i < kKeys; ++i) {
        expect_access(i, false, i == allowed);
        expect_access(i, true, i == allowed && write);
      }
    }
  }

  // All access back, and a thread started now inherits it.
  for (int i = 0; i < kKeys; ++i) {
    EXPECT_EQ(pkey_set(g_keys[i], 0), 0);
    expect_access(i, false, true);
    expect_access(i, true, true);
  }
  Worker late;  // glibc's second delayed thread
  for (int i = 0; i < kKeys; ++i) EXPECT_EQ(late.rights(g_keys[i]), 0);

  // Frees succeed although the pages are mapped; a second free is EINVAL.
  EXPECT_EQ(pkey_free(g_keys[0]), 0) << errno_str();
  EXPECT_ERRNO(EINVAL, pkey_free(g_keys[0]));
  for (int i = 1; i < kKeys; ++i) EXPECT_EQ(pkey_free(g_keys[i]), 0) << errno_str();
  const std::array<int, kKeys> freed = g_keys;
  g_keys = {};

  // glibc's test allocates until ENOSPC and accepts either outcome: a
  // freed number comes back (the kernel's way) or none does before the
  // numbers run out. pkeys: none does while its pages are mapped.
  std::vector<int> taken;
  int last_errno = 0;
  for (int k; (k = pkey_alloc(0, PKEY_DISABLE_WRITE)) > 0 || ((last_errno = errno), false);) taken.push_back(k);
  EXPECT_EQ(last_errno, ENOSPC);
  for (int k : taken)
    for (int f : freed) EXPECT_NE(k, f) << "a number whose page is mapped came back";
  for (int k : taken) EXPECT_EQ(pkey_free(k), 0);

  // (pkeys) The old pages: no access for any thread, old or new.
  for (int i = 0; i < kKeys; ++i) {
    EXPECT_FALSE(touch(pages_[i], false).allowed) << "page " << i;
    EXPECT_FALSE(late.can(const_cast<int*>(pages_[i]), Access::read)) << "page " << i;
  }

  for (volatile int*& p : pages_) {
    ASSERT_EQ(::munmap(const_cast<int*>(p), page_size()), 0);
    p = nullptr;
  }

  // (pkeys) Unmapped: the numbers come back, and a thread that had access
  // before the free has none on the new owner's key. Differs on purpose:
  // under glibc and the kernel such a thread keeps its old rights (the test
  // checks that it "should still have access").
  taken.clear();
  for (int k; (k = pkey_alloc(0, PKEY_DISABLE_WRITE)) > 0;) taken.push_back(k);
  for (int f : freed) {
    EXPECT_NE(std::find(taken.begin(), taken.end(), f), taken.end()) << "number " << f << " did not come back";
    if (hardware_backend()) {
      EXPECT_EQ(late.register_rights(f), static_cast<unsigned>(PKEY_DISABLE_ACCESS));
    }
  }
  for (int k : taken) EXPECT_EQ(pkey_free(k), 0);
}

// --- the kernel's protection_keys.c, its checks that go through the C ABI

class KernelSelftest : public ::testing::Test {
 protected:
  void SetUp() override {
    key_ = pkey_alloc(0, 0);
    ASSERT_GT(key_, 0) << errno_str();
    page_ = static_cast<int*>(map_pages(1));
    ASSERT_EQ(pkey_mprotect(page_, page_size(), PROT_READ | PROT_WRITE, key_), 0) << errno_str();
  }
  void TearDown() override {
    ::munmap(page_, page_size());
    pkey_free(key_);
  }
  int key_ = -1;
  int* page_ = nullptr;
};

// test_pkey_syscalls_on_non_allocated_pkey, test_pkey_syscalls_bad_args.
TEST_F(KernelSelftest, CallsOnKeysNotAllocatedFail) {
  for (int k = 1; k < pkeys_max_keys(); ++k) {
    if (k == key_) continue;
    if (pkey_query(k) >= 0) continue;  // held by another test's leftovers
    EXPECT_ERRNO(EINVAL, pkey_free(k)) << k;
    EXPECT_ERRNO(EINVAL, pkey_free(k)) << k;
    EXPECT_ERRNO(EINVAL, pkey_mprotect(page_, page_size(), PROT_READ, k)) << k;
  }
  EXPECT_ERRNO(EINVAL, pkey_mprotect(page_, page_size(), PROT_READ, 16 + 99));
}

// test_pkey_alloc_exhaust: at least 16 - 2 (key 0, an execute-only key) -
// 1 (the test's) more, never more than the hardware has; fork keeps the
// allocation state.
TEST_F(KernelSelftest, AllocUntilExhausted) {
  std::vector<int> taken;
  for (int i = 0; i < 3 * 16; ++i) {
    const int k = pkey_alloc(0, 0);
    if (k < 0) {
      EXPECT_EQ(errno, ENOSPC);
      continue;
    }
    EXPECT_NE(k, 0);
    taken.push_back(k);
  }
  EXPECT_LE(taken.size(), 15u - 1u);
  EXPECT_GE(taken.size(), 16u - 2u - 1u);
  const pid_t child = ::fork();
  if (child == 0) _exit(pkey_alloc(0, 0) == -1 && errno == ENOSPC ? 0 : 1);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the child could allocate";
  for (int k : taken) EXPECT_EQ(pkey_free(k), 0);
}

// test_pkey_alloc_free_attach_pkey0 and test_mprotect_with_pkey_0: key 0 is
// never handed out, and tagging with it works in every protection.
TEST_F(KernelSelftest, KeyZeroAttachesInEveryMode) {
  for (int prot : {PROT_READ, PROT_WRITE, PROT_EXEC, PROT_READ | PROT_WRITE, PROT_READ | PROT_WRITE | PROT_EXEC})
    EXPECT_EQ(pkey_mprotect(page_, page_size(), prot, 0), 0) << prot << ": " << errno_str();
  EXPECT_EQ(pkey_mprotect(page_, page_size(), PROT_READ | PROT_WRITE, key_), 0) << "and back to the key";
}

// test_{read,write}_of_{write,access}_disabled_region[_with_page_already_mapped].
TEST_F(KernelSelftest, DisabledRightsFaultOnTheKey) {
  *page_ = 1;
  ASSERT_EQ(pkey_set(key_, PKEY_DISABLE_WRITE), 0);
  EXPECT_TRUE(can_read(page_));
  Outcome o = probe(page_, Access::write);
  EXPECT_TRUE(o.faulted);
  EXPECT_EQ(o.fault_key, key_) << describe(o);
  ASSERT_EQ(pkey_set(key_, PKEY_DISABLE_ACCESS), 0);
  o = probe(page_, Access::read);
  EXPECT_TRUE(o.faulted);
  EXPECT_EQ(o.fault_key, key_) << describe(o);
  if (hardware_backend()) {
    EXPECT_EQ(o.code, SEGV_PKUERR);
  }
  ASSERT_EQ(pkey_set(key_, 0), 0);
}

// test_kernel_write_of_{access,write}_disabled_region and
// test_kernel_gup_of_access_disabled_region: the kernel honours the rights
// for the calling thread's buffers too.
TEST_F(KernelSelftest, TheKernelHonoursTheRights) {
  const int fd = ::open("/proc/self/stat", O_RDONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(pkey_set(key_, PKEY_DISABLE_ACCESS), 0);
  EXPECT_ERRNO(EFAULT, ::read(fd, page_, 1));
  ASSERT_EQ(pkey_set(key_, PKEY_DISABLE_WRITE), 0);
  EXPECT_ERRNO(EFAULT, ::read(fd, page_, 100));
  ASSERT_EQ(pkey_set(key_, PKEY_DISABLE_ACCESS), 0);
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  iovec iov{page_, page_size()};
  EXPECT_EQ(::vmsplice(pipe_fds[1], &iov, 1, SPLICE_F_GIFT), -1);
  ASSERT_EQ(pkey_set(key_, 0), 0);
  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);
  ::close(fd);
}

}  // namespace
