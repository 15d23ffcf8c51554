// SPDX-License-Identifier: MIT
// JIT code regions inside a host program: a forked child cannot change its
// parent's code, and no alias of the write view escapes the region's
// governance.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "pkeys/pkeys.h"
#include "probe.hpp"

using namespace pkeys_test;

namespace {

constexpr unsigned char kReturn42[] = {0xb8, 42, 0, 0, 0, 0xc3};  // mov eax, 42; ret
constexpr unsigned char kReturn7[] = {0xb8, 7, 0, 0, 0, 0xc3};
using Fn = int (*)();

class CodeRegion : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(pkeys_code_region_create(&code_, 100), 0) << errno_str();
    ASSERT_EQ(pkeys_code_write_begin(&code_), 0) << errno_str();
    std::memcpy(code_.write, kReturn42, sizeof kReturn42);
    ASSERT_EQ(pkeys_code_write_end(&code_), 0) << errno_str();
  }
  void TearDown() override { EXPECT_EQ(pkeys_code_region_destroy(&code_), 0) << errno_str(); }
  pkeys_code_region code_{};
};

// Exit status of a forked child running `body` (its return value).
template <class F>
int in_child(F body) {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(body());
  int status = 0;
  if (pid < 0 || ::waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

TEST_F(CodeRegion, AForkedChildCannotChangeItsParentsCode) {
  const int status = in_child([&] {
    int failures = 0;
    // Its write scope opens, but it has no write view.
    if (pkeys_code_write_begin(&code_) == 0) {
      if (can_write_here(code_.write)) {
        std::memcpy(code_.write, kReturn7, sizeof kReturn7);
        failures |= 1;
      }
      pkeys_code_write_end(&code_);
    }
    // Nor can it make one: not from the file, not from the executable view.
    void* w = ::mmap(nullptr, code_.size, PROT_READ | PROT_WRITE, MAP_SHARED, code_.fd, 0);
    if (w != MAP_FAILED) {
      static_cast<unsigned char*>(w)[1] = 7;
      failures |= 2;
    }
    if (::mprotect(code_.exec, code_.size, PROT_READ | PROT_WRITE) == 0) {
      static_cast<unsigned char*>(code_.exec)[1] = 7;
      failures |= 4;
    }
    if (::pwrite(code_.fd, kReturn7, sizeof kReturn7, 0) == static_cast<ssize_t>(sizeof kReturn7)) failures |= 8;
    // Resizing (growing here: shrinking would take the parent's code away
    // under it, a crash rather than a failed check).
    if (::ftruncate(code_.fd, static_cast<off_t>(2 * code_.size)) == 0) {
      (void)::ftruncate(code_.fd, static_cast<off_t>(code_.size));
      failures |= 16;
    }
    return failures;
  });
  EXPECT_EQ(status, 0) << "ways the child changed the code: bit 0 write view, 1 new mapping, "
                          "2 mprotect of the executable view, 3 write(2), 4 resizing";
  EXPECT_EQ(reinterpret_cast<Fn>(code_.exec)(), 42) << "the parent runs its own code";
  // The parent still writes through its own scope.
  ASSERT_EQ(pkeys_code_write_begin(&code_), 0) << errno_str();
  std::memcpy(code_.write, kReturn7, sizeof kReturn7);
  ASSERT_EQ(pkeys_code_write_end(&code_), 0) << errno_str();
  EXPECT_EQ(reinterpret_cast<Fn>(code_.exec)(), 7);
}

TEST_F(CodeRegion, TheExecutableViewNeverBecomesWritable) {
  EXPECT_NE(::mprotect(code_.exec, code_.size, PROT_READ | PROT_WRITE | PROT_EXEC), 0);
  EXPECT_NE(::mprotect(code_.exec, code_.size, PROT_READ | PROT_WRITE), 0);
  EXPECT_EQ(::mmap(nullptr, code_.size, PROT_READ | PROT_WRITE, MAP_SHARED, code_.fd, 0), MAP_FAILED);
}

TEST_F(CodeRegion, AnAliasOfTheWriteViewIsGovernedLikeIt) {
  ASSERT_EQ(pkeys_code_write_begin(&code_), 0) << errno_str();
  // A second mapping of the write view's pages (old size 0: a shared
  // mapping duplicated), made inside the scope.
  void* alias = ::mremap(code_.write, 0, code_.size, MREMAP_MAYMOVE);
  ASSERT_NE(alias, MAP_FAILED) << errno_str();
  EXPECT_TRUE(can_write_here(static_cast<char*>(alias) + 64)) << "inside the scope, like the write view";
  ASSERT_EQ(pkeys_code_write_end(&code_), 0) << errno_str();
  EXPECT_FALSE(can_write_here(static_cast<char*>(alias) + 64)) << "the alias stayed writable after the scope";
  EXPECT_FALSE(can_write_here(code_.write));
  EXPECT_EQ(reinterpret_cast<Fn>(code_.exec)(), 42);
  ASSERT_EQ(::munmap(alias, code_.size), 0) << errno_str();
}
