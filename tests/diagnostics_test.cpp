// SPDX-License-Identifier: MIT
// pkeys_diagnose_faults: the report, checked line by line, from a child
// that faults; then the hand-over to the previous handler or the default.
#include <gtest/gtest.h>

#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "pkeys/pkeys.h"
#include "probe.hpp"

using namespace pkeys_test;

namespace {

struct ChildResult {
  std::vector<std::string> lines;  // its stderr
  int status = 0;
};

// Runs `body` in a child with stderr captured.
ChildResult run_child(const std::function<void()>& body) {
  int fds[2];
  EXPECT_EQ(::pipe(fds), 0) << errno_str();
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(fds[1], STDERR_FILENO);
    ::close(fds[0]);
    body();
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string text;
  char buf[512];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) text.append(buf, static_cast<std::size_t>(n));
  ::close(fds[0]);
  ChildResult r;
  ::waitpid(pid, &r.status, 0);
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) r.lines.push_back(line);
  return r;
}

std::string hex(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%016lx", reinterpret_cast<unsigned long>(p));
  return buf;
}

void exit_42(int) { ::_exit(42); }

class Diagnostics : public ::testing::Test {
 protected:
  void SetUp() override {
    key_ = pkey_alloc(0, 0);
    ASSERT_GT(key_, 0) << errno_str();
    base_ = static_cast<char*>(map_pages(2));
    ASSERT_EQ(pkey_mprotect(base_, 2 * page_size(), PROT_READ | PROT_WRITE, key_), 0) << errno_str();
    ASSERT_EQ(pkey_label(key_, "session secrets"), 0) << errno_str();
  }
  void TearDown() override {
    ASSERT_EQ(::munmap(base_, 2 * page_size()), 0) << errno_str();
    ASSERT_EQ(pkey_free(key_), 0) << errno_str();
  }
  std::vector<std::string> expected(const void* addr, const char* access, const char* rights) {
    const std::string k = std::to_string(key_);
    return {
        "pkeys: SIGSEGV: protection key " + k + " denied a " + access + " access",
        "pkeys:   address " + hex(addr),
        std::string("pkeys:   access  ") + access,
        "pkeys:   key     " + k + " \"session secrets\"",
        std::string("pkeys:   rights  ") + rights,
        "pkeys:   range   " + hex(base_) + "-" + hex(base_ + 2 * page_size()) + " (" +
            std::to_string(2 * page_size()) + " bytes, rw-)",
        std::string("pkeys:   backend ") + pkeys_backend(),
    };
  }
  int key_ = -1;
  char* base_ = nullptr;
};

}  // namespace

TEST_F(Diagnostics, ReportsAReadDeniedByNoAccess) {
  char* target = base_ + page_size() + 8;
  const ChildResult r = run_child([&] {
    pkeys_diagnose_faults(1);
    pkey_set(key_, PKEY_DISABLE_ACCESS);
    (void)*static_cast<volatile char*>(target);
  });
  EXPECT_EQ(r.lines, expected(target, "read", "no-access (PKEY_DISABLE_ACCESS)"));
  ASSERT_TRUE(WIFSIGNALED(r.status)) << "the default action ends the child";
  EXPECT_EQ(WTERMSIG(r.status), SIGSEGV);
}

TEST_F(Diagnostics, ReportsAWriteDeniedByReadOnly) {
  char* target = base_ + 100;
  const ChildResult r = run_child([&] {
    pkeys_diagnose_faults(1);
    pkey_set(key_, PKEY_DISABLE_WRITE);
    *static_cast<volatile char*>(target) = 1;
  });
  EXPECT_EQ(r.lines, expected(target, "write", "read-only (PKEY_DISABLE_WRITE)"));
  ASSERT_TRUE(WIFSIGNALED(r.status));
  EXPECT_EQ(WTERMSIG(r.status), SIGSEGV);
}

TEST_F(Diagnostics, HandsOverToThePreviousHandler) {
  const ChildResult r = run_child([&] {
    ::signal(SIGSEGV, exit_42);
    pkeys_diagnose_faults(1);
    pkey_set(key_, PKEY_DISABLE_ACCESS);
    (void)*static_cast<volatile char*>(base_);
  });
  EXPECT_EQ(r.lines, expected(base_, "read", "no-access (PKEY_DISABLE_ACCESS)"));
  ASSERT_TRUE(WIFEXITED(r.status));
  EXPECT_EQ(WEXITSTATUS(r.status), 42);
}

TEST_F(Diagnostics, SilentForFaultsNoKeyCaused) {
  void* ro = map_pages(1);
  ASSERT_EQ(::mprotect(ro, page_size(), PROT_READ), 0) << errno_str();
  const ChildResult r = run_child([&] {
    pkeys_diagnose_faults(1);
    *static_cast<volatile char*>(ro) = 1;
  });
  EXPECT_TRUE(r.lines.empty()) << r.lines.front();
  ASSERT_TRUE(WIFSIGNALED(r.status));
  EXPECT_EQ(WTERMSIG(r.status), SIGSEGV);
  ::munmap(ro, page_size());
}

TEST_F(Diagnostics, DisableRestoresThePreviousHandler) {
  const ChildResult r = run_child([&] {
    ::signal(SIGSEGV, exit_42);
    pkeys_diagnose_faults(1);
    pkeys_diagnose_faults(0);
    pkey_set(key_, PKEY_DISABLE_ACCESS);
    (void)*static_cast<volatile char*>(base_);
  });
  EXPECT_TRUE(r.lines.empty());
  ASSERT_TRUE(WIFEXITED(r.status));
  EXPECT_EQ(WEXITSTATUS(r.status), 42);
}

namespace {

// A one-shot crash logger (what signal() gives under -std=c11): counts its
// calls and, called a second time, stops the child with 3 rather than loop.
volatile sig_atomic_t g_logger_calls = 0;
void one_shot_logger(int) {
  g_logger_calls = g_logger_calls + 1;
  if (g_logger_calls > 1) ::_exit(3);
  static const char msg[] = "logger\n";
  (void)::write(STDERR_FILENO, msg, sizeof msg - 1);
}

// Exits with a bit set for each expectation the kernel's way of calling a
// handler meets: SIGSEGV blocked (1), its sa_mask's SIGUSR1 blocked (2).
void exit_with_mask_bits(int) {
  sigset_t now;
  ::pthread_sigmask(SIG_SETMASK, nullptr, &now);
  ::_exit(64 | (sigismember(&now, SIGSEGV) ? 1 : 0) | (sigismember(&now, SIGUSR1) ? 2 : 0));
}

}  // namespace

TEST_F(Diagnostics, APreviousOneShotHandlerRunsOnceThenTheDefaultAction) {
  const ChildResult r = run_child([&] {
    struct sigaction sa {};
    sa.sa_handler = one_shot_logger;
    sa.sa_flags = SA_RESETHAND | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGSEGV, &sa, nullptr);
    pkeys_diagnose_faults(1);
    pkey_set(key_, PKEY_DISABLE_ACCESS);
    (void)*static_cast<volatile char*>(base_);
  });
  // The logger returns: the access faults again, and the one-shot handler
  // is spent, as the kernel would have reset it: the default action.
  ASSERT_TRUE(WIFSIGNALED(r.status)) << "exit " << WEXITSTATUS(r.status) << " (3: the logger ran twice)";
  EXPECT_EQ(WTERMSIG(r.status), SIGSEGV);
  ASSERT_FALSE(r.lines.empty());
  EXPECT_EQ(std::count(r.lines.begin(), r.lines.end(), "logger"), 1);
  EXPECT_EQ(r.lines.front(), expected(base_, "read", "no-access (PKEY_DISABLE_ACCESS)").front());
}

TEST_F(Diagnostics, ARaisedSigsegvStillKills) {
  for (const bool with_kill : {false, true}) {
    const ChildResult r = run_child([&] {
      pkeys_diagnose_faults(1);
      if (with_kill)
        ::kill(::getpid(), SIGSEGV);
      else
        ::raise(SIGSEGV);
      ::_exit(5);  // the signal was swallowed
    });
    ASSERT_TRUE(WIFSIGNALED(r.status)) << (with_kill ? "kill" : "raise") << ": exit " << WEXITSTATUS(r.status);
    EXPECT_EQ(WTERMSIG(r.status), SIGSEGV);
    EXPECT_TRUE(r.lines.empty()) << "not a key's fault: no report";
  }
}

TEST_F(Diagnostics, ThePreviousHandlerRunsWithItsOwnMask) {
  const ChildResult r = run_child([&] {
    struct sigaction sa {};
    sa.sa_handler = exit_with_mask_bits;
    sa.sa_flags = 0;  // SIGSEGV itself blocked while it runs
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGUSR1);
    ::sigaction(SIGSEGV, &sa, nullptr);
    pkeys_diagnose_faults(1);
    pkey_set(key_, PKEY_DISABLE_ACCESS);
    (void)*static_cast<volatile char*>(base_);
  });
  ASSERT_TRUE(WIFEXITED(r.status));
  EXPECT_EQ(WEXITSTATUS(r.status), 64 | 1 | 2) << "1: SIGSEGV blocked, 2: SIGUSR1 (its sa_mask) blocked";
}

TEST_F(Diagnostics, EnablingAgainAfterTheProgramReplacedTheHandlerReinstallsIt) {
  const ChildResult r = run_child([&] {
    pkeys_diagnose_faults(1);
    ::signal(SIGSEGV, exit_42);  // the program's own handler replaces pkeys'
    if (pkeys_diagnose_faults(1) != 0) ::_exit(7);
    pkey_set(key_, PKEY_DISABLE_ACCESS);
    (void)*static_cast<volatile char*>(base_);
  });
  EXPECT_EQ(r.lines, expected(base_, "read", "no-access (PKEY_DISABLE_ACCESS)"));
  ASSERT_TRUE(WIFEXITED(r.status));
  EXPECT_EQ(WEXITSTATUS(r.status), 42) << "chained to the program's handler";
}

namespace {

// The program's heap ([heap] in /proc/self/maps), or {0, 0}.
std::pair<std::uintptr_t, std::uintptr_t> heap_mapping() {
  std::FILE* f = std::fopen("/proc/self/maps", "re");
  if (!f) return {0, 0};
  char line[512];
  std::pair<std::uintptr_t, std::uintptr_t> heap{0, 0};
  while (std::fgets(line, sizeof line, f)) {
    unsigned long start = 0, end = 0;
    if (std::strstr(line, "[heap]") && std::sscanf(line, "%lx-%lx", &start, &end) == 2) heap = {start, end};
  }
  std::fclose(f);
  return heap;
}

}  // namespace

// The program tags its whole heap (or, without a brk heap, a block of it), where pkeys' own records and objects
// would live if pkeys allocated with malloc: the report must still come,
// name the program's address, and pkeys must not fault inside itself.
TEST_F(Diagnostics, ReportsAFaultInATaggedHeap) {
  auto [heap_start, heap_end] = heap_mapping();
  void* block = nullptr;  // without a brk heap (a sanitizer's malloc), a block of it
  if (heap_start == heap_end) {
    block = std::aligned_alloc(page_size(), 16 * page_size());
    ASSERT_NE(block, nullptr);
    heap_start = reinterpret_cast<std::uintptr_t>(block);
    heap_end = heap_start + 16 * page_size();
  }
  // A static program's first thread has its TLS block and thread control
  // block at the start of the heap (glibc takes them with sbrk): tagged,
  // the thread could not run at all. The heap after them is tagged.
  const auto tp = reinterpret_cast<std::uintptr_t>(__builtin_thread_pointer());
  if (tp >= heap_start && tp < heap_end) heap_start = (tp + 65536 + page_size() - 1) & ~(page_size() - 1);
  if (heap_start + page_size() > heap_end) GTEST_SKIP() << "the heap holds little more than the thread's TLS block";
  const std::uintptr_t target = heap_start + 64;
  const int key = key_;
  const ChildResult r = run_child([=] {
    // Locals only from here on: the closure may live in the heap itself.
    const std::uintptr_t start = heap_start, end = heap_end, addr = target;
    const int k = key;
    pkeys_diagnose_faults(1);
    if (pkey_mprotect(reinterpret_cast<void*>(start), end - start, PROT_READ | PROT_WRITE, k) != 0) ::_exit(9);
    pkey_set(k, PKEY_DISABLE_ACCESS);
    (void)*reinterpret_cast<volatile char*>(addr);
    ::_exit(8);
  });
  const std::string k = std::to_string(key_);
  const std::vector<std::string> want = {
      "pkeys: SIGSEGV: protection key " + k + " denied a read access",
      "pkeys:   address " + hex(reinterpret_cast<void*>(target)),
      "pkeys:   access  read",
      "pkeys:   key     " + k + " \"session secrets\"",
      "pkeys:   rights  no-access (PKEY_DISABLE_ACCESS)",
      "pkeys:   range   " + hex(reinterpret_cast<void*>(heap_start)) + "-" + hex(reinterpret_cast<void*>(heap_end)) +
          " (" + std::to_string(heap_end - heap_start) + " bytes, rw-)",
      std::string("pkeys:   backend ") + pkeys_backend(),
  };
  EXPECT_EQ(r.lines, want);
  std::free(block);
  ASSERT_TRUE(WIFSIGNALED(r.status)) << "exit " << WEXITSTATUS(r.status);
  EXPECT_EQ(WTERMSIG(r.status), SIGSEGV);
}

// pkeys' own memory (its records, its runtime) is not the program's to tag
// or protect: pkey_mprotect and pkeys_vkey_mprotect over it fail with
// EACCES. The test offers them every anonymous read-write mapping of the
// process, with the protection it has (key -1: a change that changes
// nothing), and expects some to be pkeys'.
TEST(InternalMemory, PkeyMprotectOverPkeysOwnMemoryFailsWithEacces) {
  const int vkey = pkeys_vkey_create(0);
  ASSERT_GT(vkey, 0) << errno_str();
  std::vector<std::pair<std::uintptr_t, std::uintptr_t>> anonymous;
  std::FILE* f = std::fopen("/proc/self/maps", "re");
  ASSERT_NE(f, nullptr) << errno_str();
  char line[512];
  while (std::fgets(line, sizeof line, f)) {
    unsigned long start = 0, end = 0, offset = 0, inode = 1;
    char perms[8] = {}, dev[16] = {};
    int name_at = 0;
    if (std::sscanf(line, "%lx-%lx %7s %lx %15s %lu %n", &start, &end, perms, &offset, dev, &inode, &name_at) < 6)
      continue;
    if (inode == 0 && std::strcmp(perms, "rw-p") == 0 && (line[name_at] == '\n' || line[name_at] == 0))
      anonymous.emplace_back(start, end);
  }
  std::fclose(f);
  const ChildResult r = run_child([&] {
    int refused = 0, vkey_refused = 0, other_errors = 0;
    for (const auto& [start, end] : anonymous) {
      void* a = reinterpret_cast<void*>(start);
      if (pkey_mprotect(a, end - start, PROT_READ | PROT_WRITE, -1) != 0) (errno == EACCES ? refused : other_errors)++;
      if (pkeys_vkey_mprotect(a, end - start, PROT_READ | PROT_WRITE, vkey) != 0)
        (errno == EACCES ? vkey_refused : other_errors)++;
    }
    ::_exit((refused > 0 ? 1 : 0) | (vkey_refused > 0 ? 2 : 0) | (other_errors > 0 ? 4 : 0));
  });
  ASSERT_TRUE(WIFEXITED(r.status));
  EXPECT_EQ(WEXITSTATUS(r.status), 1 | 2) << "1: pkey_mprotect refused, 2: pkeys_vkey_mprotect refused, 4: other errors";
  EXPECT_EQ(pkeys_vkey_destroy(vkey), 0) << errno_str();
}

TEST(Labels, SetGetAndCheck) {
  const int k = pkey_alloc(0, 0);
  ASSERT_GT(k, 0) << errno_str();
  char buf[64];
  EXPECT_EQ(pkeys_get_label(k, buf, sizeof buf), 0);
  EXPECT_STREQ(buf, "");
  ASSERT_EQ(pkey_label(k, "jit code"), 0) << errno_str();
  EXPECT_EQ(pkeys_get_label(k, buf, sizeof buf), 8);
  EXPECT_STREQ(buf, "jit code");
  EXPECT_EQ(pkeys_get_label(k, buf, 4), 8) << "returns the full length";
  EXPECT_STREQ(buf, "jit");
  const std::string long_label(100, 'x');
  ASSERT_EQ(pkey_label(k, long_label.c_str()), 0) << errno_str();
  EXPECT_EQ(pkeys_get_label(k, buf, sizeof buf), 63);
  ASSERT_EQ(pkey_label(k, nullptr), 0) << errno_str();
  EXPECT_EQ(pkeys_get_label(k, buf, sizeof buf), 0);
  ASSERT_EQ(pkey_free(k), 0) << errno_str();
  EXPECT_ERRNO(EINVAL, pkey_label(k, "x"));
  EXPECT_ERRNO(EINVAL, pkeys_get_label(k, buf, sizeof buf));
  const int again = pkey_alloc(0, 0);
  EXPECT_EQ(pkeys_get_label(again, buf, sizeof buf), 0) << "a new owner starts unlabelled";
  ASSERT_EQ(pkey_free(again), 0) << errno_str();
}
