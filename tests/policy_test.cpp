// SPDX-License-Identifier: MIT
// Execute-only memory, the W^X policy and JIT code regions.
#include <gtest/gtest.h>

#include <sys/personality.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "pkeys/pkeys.h"
#include "probe.hpp"

using namespace pkeys_test;

#ifndef SEGV_PKUERR
#define SEGV_PKUERR 4
#endif

namespace {

// mov eax, 42 ; ret
const unsigned char kReturn42[] = {0xb8, 0x2a, 0x00, 0x00, 0x00, 0xc3};
using Fn = int (*)();

// The permissions column of /proc/self/maps for the mapping holding `p`.
std::string perms_of(const void* p) {
  std::ifstream in("/proc/self/maps");
  std::string line;
  const auto a = reinterpret_cast<unsigned long>(p);
  while (std::getline(in, line)) {
    unsigned long lo, hi;
    char perms[8];
    if (std::sscanf(line.c_str(), "%lx-%lx %7s", &lo, &hi, perms) == 3 && a >= lo && a < hi) return perms;
  }
  return "";
}

class WxPolicy : public ::testing::Test {
 protected:
  void TearDown() override { ASSERT_EQ(pkeys_set_wx_policy(PKEYS_WX_OFF), 0); }
};

}  // namespace

// Keys pkey_alloc can still hand out (all given back).
int free_keys() {
  std::vector<int> keys;
  for (int k; (k = pkey_alloc(0, 0)) > 0;) keys.push_back(k);
  for (int k : keys) pkey_free(k);
  return static_cast<int>(keys.size());
}

// First of its suite: pkeys' execute-only key is not taken yet, so a
// failed first call that took it would show.
TEST(ExecuteOnly, AFailedCallTakesNoKey) {
  if (!(pkeys_capabilities() & PKEYS_CAP_EXECUTE_ONLY)) GTEST_SKIP() << "backend " << pkeys_backend() << " has no execute-only memory";
  const int before = free_keys();
  char* p = static_cast<char*>(map_pages(2));
  ASSERT_NE(p, nullptr);
  EXPECT_ERRNO(EINVAL, pkeys_mprotect_execute_only(p + 1, page_size()));
  EXPECT_ERRNO(ENOMEM, pkeys_mprotect_execute_only(nullptr, page_size()));
  ASSERT_EQ(::munmap(p + page_size(), page_size()), 0);
  EXPECT_ERRNO(ENOMEM, pkeys_mprotect_execute_only(p, 2 * page_size()));  // a hole
  EXPECT_TRUE(can_write(p)) << "nothing changed";
  EXPECT_EQ(free_keys(), before) << "a failed call kept a key";
  ::munmap(p, page_size());
}

TEST(ExecuteOnly, CodeRunsAndReadsFault) {
  if (!(pkeys_capabilities() & PKEYS_CAP_EXECUTE_ONLY)) {
    EXPECT_MAP_ERRNO(ENOTSUP, pkeys_mmap_execute_only(kReturn42, sizeof kReturn42)) << "the emulation never pretends";
    void* p = map_pages(1);
    EXPECT_ERRNO(ENOTSUP, pkeys_mprotect_execute_only(p, page_size()));
    EXPECT_TRUE(can_write(p)) << "nothing changed";
    ::munmap(p, page_size());
    GTEST_SKIP() << "backend " << pkeys_backend() << " cannot make memory execute-only (checked: ENOTSUP)";
  }
  void* code = pkeys_mmap_execute_only(kReturn42, sizeof kReturn42);
  ASSERT_NE(code, MAP_FAILED) << std::strerror(errno);
  EXPECT_EQ(reinterpret_cast<Fn>(code)(), 42) << "the code runs";
  const Outcome read = probe(code, Access::read);
  EXPECT_TRUE(read.faulted);
  EXPECT_EQ(read.code, SEGV_PKUERR) << describe(read);
  EXPECT_TRUE(probe(code, Access::write).faulted);
  int from_thread = 0;
  bool thread_read = true;
  std::thread([&] {
    from_thread = reinterpret_cast<Fn>(code)();
    thread_read = can_read(code);
  }).join();
  EXPECT_EQ(from_thread, 42);
  EXPECT_FALSE(thread_read) << "no thread can read it";
  EXPECT_EQ(perms_of(code), "--xp");
  ASSERT_EQ(::munmap(code, page_size()), 0);
}

TEST_F(WxPolicy, DenyRefusesWritableAndExecutable) {
  void* p = map_pages(1);
  const int k = pkey_alloc(0, 0);
  const int v = pkeys_vkey_create(0);
  ASSERT_GT(k, 0);
  ASSERT_GT(v, 0);
  EXPECT_ERRNO(EINVAL, pkeys_set_wx_policy(7));
  ASSERT_EQ(pkeys_set_wx_policy(PKEYS_WX_DENY), 0);
  EXPECT_EQ(pkeys_get_wx_policy(), PKEYS_WX_DENY);
  for (int key : {-1, 0, k}) {
    EXPECT_ERRNO(EACCES, pkey_mprotect(p, page_size(), PROT_READ | PROT_WRITE | PROT_EXEC, key)) << key;
  }
  EXPECT_ERRNO(EACCES, pkeys_vkey_mprotect(p, page_size(), PROT_WRITE | PROT_EXEC, v));
  EXPECT_EQ(perms_of(p), "rw-p") << "nothing changed";
  EXPECT_EQ(pkey_mprotect(p, page_size(), PROT_READ | PROT_EXEC, k), 0) << "W or X alone is fine";
  EXPECT_EQ(pkey_mprotect(p, page_size(), PROT_READ | PROT_WRITE, 0), 0);
  ASSERT_EQ(::munmap(p, page_size()), 0);
  EXPECT_EQ(pkey_free(k), 0);
  EXPECT_EQ(pkeys_vkey_destroy(v), 0);
}

// With READ_IMPLIES_EXEC (personality(2), or an old i386 program) the
// kernel adds PROT_EXEC to any request with PROT_READ: a read-write request
// is a writable-and-executable one. The personality is the process's, so
// the calls run in a child, which writes what it saw.
TEST_F(WxPolicy, DenyCountsReadImpliesExec) {
  void* p = map_pages(1);
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    std::string seen;
    auto note = [&](const char* what, int r) {
      seen += std::string(what) + ": " + (r == 0 ? "ok" : errno == EACCES ? "EACCES" : std::strerror(errno)) + "\n";
    };
    pkeys_set_wx_policy(PKEYS_WX_DENY);
    const int k = pkey_alloc(0, 0);
    const int v = pkeys_vkey_create(0);
    if (::personality(READ_IMPLIES_EXEC) == -1) seen += "personality failed\n";
    note("pkey_mprotect-rw", pkey_mprotect(p, page_size(), PROT_READ | PROT_WRITE, -1));
    note("pkey_mprotect-rw-key", pkey_mprotect(p, page_size(), PROT_READ | PROT_WRITE, k));
    note("vkey_mprotect-rw", pkeys_vkey_mprotect(p, page_size(), PROT_READ | PROT_WRITE, v));
    seen += "perms: " + perms_of(p) + "\n";
    note("pkey_mprotect-r", pkey_mprotect(p, page_size(), PROT_READ, k));
    seen += "perms: " + perms_of(p) + "\n";
    pkeys_code_region code{};
    note("code_region_create", pkeys_code_region_create(&code, 100));
    (void)!::write(fds[1], seen.data(), seen.size());
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string seen;
  char buf[512];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) seen.append(buf, static_cast<std::size_t>(n));
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_EQ(seen,
            "pkey_mprotect-rw: EACCES\n"
            "pkey_mprotect-rw-key: EACCES\n"
            "vkey_mprotect-rw: EACCES\n"
            "perms: rw-p\n"
            "pkey_mprotect-r: ok\n"
            "perms: r-xp\n"
            "code_region_create: EACCES\n");
  ASSERT_EQ(::munmap(p, page_size()), 0);
}

TEST_F(WxPolicy, LogAllowsAndReports) {
  void* p = map_pages(1);
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(fds[1], STDERR_FILENO);
    pkeys_set_wx_policy(PKEYS_WX_LOG);
    ::_exit(pkey_mprotect(p, page_size(), PROT_READ | PROT_WRITE | PROT_EXEC, -1) == 0 ? 0 : 1);
  }
  ::close(fds[1]);
  char buf[256] = {};
  const ssize_t n = ::read(fds[0], buf, sizeof buf - 1);
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "allowed";
  ASSERT_GT(n, 0);
  EXPECT_NE(std::string(buf).find("pkeys: W^X: pkey_mprotect("), std::string::npos) << buf;
  EXPECT_NE(std::string(buf).find("allowed (policy: log)"), std::string::npos) << buf;
  ASSERT_EQ(::munmap(p, page_size()), 0);
}

TEST_F(WxPolicy, CodeRegionWritesOnlyInsideAScope) {
  ASSERT_EQ(pkeys_set_wx_policy(PKEYS_WX_DENY), 0);  // code regions comply
  pkeys_code_region code{};
  ASSERT_EQ(pkeys_code_region_create(&code, 100), 0) << std::strerror(errno);
  EXPECT_EQ(code.size, page_size());
  EXPECT_EQ(perms_of(code.exec), "r-xs");
  EXPECT_EQ(perms_of(code.write).find('x'), std::string::npos) << "never writable and executable";
  EXPECT_FALSE(can_write_here(code.write)) << "read-only outside a write scope";
  EXPECT_TRUE(can_read_here(code.write));
  EXPECT_FALSE(can_write(code.exec));
  // (The write view is not inherited by fork: probed in this process.)
  // A thread that exists before the scope opens (a thread created inside
  // would inherit the scope's rights, as with any PKRU state).
  std::atomic<int> phase{0};
  bool other_could_write = true;
  // Released and joined even when an assertion below ends the test early.
  pkeys_test::ScopedThread other(
      [&] {
        while (phase != 1) std::this_thread::yield();
        other_could_write = can_write_here(static_cast<char*>(code.write) + 64);
        phase = 2;
      },
      [&] {
        int waiting = 0;
        phase.compare_exchange_strong(waiting, 1);
      });
  ASSERT_EQ(pkeys_code_write_begin(&code), 0);
  EXPECT_TRUE(can_write_here(code.write));  // (the probe's write lands: shared memory)
  std::memcpy(code.write, kReturn42, sizeof kReturn42);
  phase = 1;
  while (phase != 2) std::this_thread::yield();
  other.join();
  EXPECT_EQ(perms_of(code.exec), "r-xs") << "the executable view never becomes writable";
  if (per_thread_rights()) {
    EXPECT_FALSE(other_could_write) << "the scope is this thread's";
  }
  EXPECT_ERRNO(EBUSY, pkeys_code_region_destroy(&code)) << "a scope is open";
  EXPECT_EQ(static_cast<unsigned char*>(code.exec)[0], kReturn42[0]) << "a refused destroy changes nothing";
  ASSERT_EQ(pkeys_code_write_end(&code), 0);
  EXPECT_FALSE(can_write_here(code.write));
  EXPECT_EQ(reinterpret_cast<Fn>(code.exec)(), 42);
  ASSERT_EQ(pkeys_code_region_destroy(&code), 0);
}
