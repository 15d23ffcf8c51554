// SPDX-License-Identifier: MIT
// Safe free: a key is freed only when no mapped page carries it.
#include <gtest/gtest.h>

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "pkeys/pkeys.h"
#include "probe.hpp"

using namespace pkeys_test;

class SafeFree : public ::testing::Test {
 protected:
  void SetUp() override {
    key_ = pkey_alloc(0, 0);
    ASSERT_GT(key_, 0);
    page_ = map_pages(2);
    ASSERT_EQ(pkey_mprotect(page_, 2 * page_size(), PROT_READ | PROT_WRITE, key_), 0);
  }
  void expect_busy() {
    EXPECT_ERRNO(EBUSY, pkey_free(key_));
    EXPECT_EQ(pkey_query(key_), 0) << "a refused free keeps the key";
  }
  int key_ = -1;
  void* page_ = nullptr;
};

TEST_F(SafeFree, BusyWhileTaggedFreeAfterMunmap) {
  expect_busy();
  ASSERT_EQ(::munmap(page_, page_size()), 0);
  expect_busy();  // the second page still carries it
  ASSERT_EQ(::munmap(static_cast<char*>(page_) + page_size(), page_size()), 0);
  EXPECT_EQ(pkey_free(key_), 0);
}

// Every file descriptor in use until destroyed (the limit lowered, so that
// filling it is quick; put back after).
class NoDescriptorsLeft {
 public:
  NoDescriptorsLeft() {
    ::getrlimit(RLIMIT_NOFILE, &saved_);
    rlimit low = saved_;
    low.rlim_cur = 64;
    ::setrlimit(RLIMIT_NOFILE, &low);
    for (int fd; (fd = ::dup(0)) >= 0;) fds_.push_back(fd);
  }
  ~NoDescriptorsLeft() {
    for (int fd : fds_) ::close(fd);
    ::setrlimit(RLIMIT_NOFILE, &saved_);
  }
  bool full() const { return ::dup(0) < 0 && errno == EMFILE; }

 private:
  rlimit saved_{};
  std::vector<int> fds_;
};

// /proc unreadable (no descriptor left; the same as /proc not mounted or a
// sandbox that denies it): a failed read proves nothing. The free is
// refused, and no other key's records are dropped with it.
TEST_F(SafeFree, BusyWhenTheMappingsCannotBeRead) {
  const int other = pkey_alloc(0, 0);
  ASSERT_GT(other, 0);
  void* other_page = map_pages(1);
  ASSERT_EQ(pkey_mprotect(other_page, page_size(), PROT_READ | PROT_WRITE, other), 0);
  int freed = 0;
  {
    NoDescriptorsLeft no_fds;
    ASSERT_TRUE(no_fds.full());
    freed = pkey_free(key_);
  }
  EXPECT_EQ(freed, -1) << "a free that could not read the mappings succeeded";
  EXPECT_EQ(pkey_query(key_), 0);
  ASSERT_EQ(pkey_set(other, PKEY_DISABLE_ACCESS), 0);
  EXPECT_FALSE(can_read(other_page)) << "another key's records were dropped";
  ASSERT_EQ(pkey_set(other, 0), 0);
  ASSERT_EQ(::munmap(other_page, page_size()), 0);
  EXPECT_EQ(pkey_free(other), 0);
  ASSERT_EQ(::munmap(page_, 2 * page_size()), 0);
  EXPECT_EQ(pkey_free(key_), 0);
}

TEST_F(SafeFree, FreeAfterRetaggingToZero) {
  expect_busy();
  ASSERT_EQ(pkey_mprotect(page_, 2 * page_size(), PROT_READ | PROT_WRITE, 0), 0);
  EXPECT_EQ(pkey_free(key_), 0);
  ASSERT_EQ(::munmap(page_, 2 * page_size()), 0);
}

TEST_F(SafeFree, FreeAfterMapFixedOverTheRange) {
  void* again = ::mmap(page_, 2 * page_size(), PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  ASSERT_EQ(again, page_);
  EXPECT_EQ(pkey_free(key_), 0);
  ASSERT_EQ(::munmap(page_, 2 * page_size()), 0);
}

TEST_F(SafeFree, FreeAfterARawMunmapPkeysDidNotSee) {
  ASSERT_EQ(::syscall(SYS_munmap, page_, 2 * page_size()), 0);
  EXPECT_EQ(pkey_free(key_), 0);
}

TEST_F(SafeFree, ReallocatedNumberGrantsNothingOnOldPages) {
  // The old owner locks its pages, untags them and frees the key.
  static_cast<char*>(page_)[0] = 7;
  ASSERT_EQ(pkey_mprotect(page_, 2 * page_size(), PROT_READ, 0), 0);
  ASSERT_EQ(pkey_free(key_), 0);
  // The next owner of the number, whatever its rights, does not reach them.
  const int next = pkey_alloc(0, PKEY_DISABLE_ACCESS);
  ASSERT_EQ(next, key_) << "the lowest free number comes back";
  EXPECT_TRUE(can_read(page_)) << "old pages no longer carry the number";
  EXPECT_FALSE(can_write(page_)) << "and keep their own protection";
  void* fresh = map_pages(1);
  ASSERT_EQ(pkey_mprotect(fresh, page_size(), PROT_READ | PROT_WRITE, next), 0);
  EXPECT_FALSE(can_read(fresh));
  ASSERT_EQ(::munmap(fresh, page_size()), 0);
  ASSERT_EQ(::munmap(page_, 2 * page_size()), 0);
  EXPECT_EQ(pkey_free(next), 0);
}
