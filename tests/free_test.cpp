// SPDX-License-Identifier: MIT
// Safe free: a number is handed out again only when no mapped page carries
// it. By default pkey_free of a key whose pages are mapped succeeds, as
// glibc's does, and quarantines the number; in strict mode it is refused.
#include <gtest/gtest.h>

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include <algorithm>

#include "pkeys/pkeys.h"
#include "probe.hpp"
#include "worker.hpp"

#ifndef SEGV_PKUERR
#define SEGV_PKUERR 4  // si_code of a protection-key fault (older headers lack it)
#endif

using namespace pkeys_test;

class SafeFree : public ::testing::Test {
 protected:
  void SetUp() override {
    key_ = pkey_alloc(0, 0);
    ASSERT_GT(key_, 0);
    page_ = map_pages(2);
    ASSERT_EQ(pkey_mprotect(page_, 2 * page_size(), PROT_READ | PROT_WRITE, key_), 0);
  }
  // Strict mode: refused while pages carry the key.
  void expect_busy() {
    EXPECT_ERRNO(EBUSY, pkeys_free_strict(key_));
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
// sandbox that denies it): a failed read proves nothing. A strict free is
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
    freed = pkeys_free_strict(key_);
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

// Every key pkey_alloc hands out now, freed again when destroyed.
class AllKeys {
 public:
  AllKeys() {
    for (int k; (k = pkey_alloc(0, 0)) > 0;) keys_.push_back(k);
    last_errno_ = errno;
  }
  ~AllKeys() {
    for (int k : keys_) pkey_free(k);
  }
  bool has(int key) const { return std::find(keys_.begin(), keys_.end(), key) != keys_.end(); }
  int ran_out_with() const { return last_errno_; }

 private:
  std::vector<int> keys_;
  int last_errno_ = 0;
};

// As close() of a file that is still mapped: the program no longer owns
// the number, and the pages stay behind, reachable by no thread.
TEST_F(SafeFree, FreeWhileMappedSucceedsAndTheKeyIsGone) {
  ASSERT_EQ(pkey_set(key_, 0), 0);
  EXPECT_EQ(pkey_free(key_), 0) << errno_str();
  EXPECT_ERRNO(EBADF, pkey_query(key_));
  EXPECT_ERRNO(EINVAL, pkey_get(key_));
  EXPECT_ERRNO(EINVAL, pkey_set(key_, 0));
  EXPECT_ERRNO(EINVAL, pkey_mprotect(page_, page_size(), PROT_READ, key_));
  EXPECT_ERRNO(EINVAL, pkey_free(key_)) << "freed twice";
  ASSERT_EQ(::munmap(page_, 2 * page_size()), 0);
}

TEST_F(SafeFree, QuarantinedPagesStayAccessDisabledInEveryThread) {
  Worker before;  // a thread from before the free, with the rights to write
  ASSERT_EQ(pkey_set_all(key_, 0), 0) << sync_error();
  ASSERT_TRUE(can_write(page_));
  ASSERT_TRUE(before.can(page_, Access::write));
  ASSERT_EQ(pkey_free(key_), 0) << errno_str();
  EXPECT_FALSE(can_read(page_)) << "the freeing thread";
  EXPECT_FALSE(before.can(page_, Access::read)) << "a thread from before the free";
  Worker after;
  EXPECT_FALSE(after.can(page_, Access::read)) << "a thread from after the free";
  // A plain mprotect keeps the page's key, and so its lock.
  ASSERT_EQ(::mprotect(page_, page_size(), PROT_READ | PROT_WRITE), 0);
  EXPECT_FALSE(can_read(page_)) << "mprotect opened a quarantined page";
  if (hardware_backend()) {
    const Outcome o = probe(page_, Access::read);
    EXPECT_EQ(o.code, SEGV_PKUERR) << describe(o);
  }
  ASSERT_EQ(::munmap(page_, 2 * page_size()), 0);
}

TEST_F(SafeFree, QuarantinedNumberIsNotHandedOutUntilUnmapped) {
  ASSERT_EQ(pkey_free(key_), 0) << errno_str();
  {
    AllKeys all;
    EXPECT_EQ(all.ran_out_with(), ENOSPC);
    EXPECT_FALSE(all.has(key_)) << "a number pages still carry was handed out";
  }
  ASSERT_EQ(::munmap(page_, page_size()), 0);
  {
    AllKeys all;
    EXPECT_FALSE(all.has(key_)) << "the second page still carries it";
  }
  ASSERT_EQ(::munmap(static_cast<char*>(page_) + page_size(), page_size()), 0);
  AllKeys all;
  EXPECT_TRUE(all.has(key_)) << "unmapped: the number is free again";
}

TEST_F(SafeFree, QuarantinedNumberIsFreeAfterRetaggingToZero) {
  ASSERT_EQ(pkey_free(key_), 0) << errno_str();
  ASSERT_EQ(pkey_mprotect(page_, 2 * page_size(), PROT_READ | PROT_WRITE, 0), 0);
  EXPECT_TRUE(can_write(page_)) << "untagged: its own protection";
  AllKeys all;
  EXPECT_TRUE(all.has(key_));
  ASSERT_EQ(::munmap(page_, 2 * page_size()), 0);
}

// A raw munmap pkeys did not see: the number is free once pkey_alloc runs
// out and looks again.
TEST_F(SafeFree, QuarantinedNumberIsFreeWhenAllocRunsOutAfterARawMunmap) {
  ASSERT_EQ(pkey_free(key_), 0) << errno_str();
  ASSERT_EQ(::syscall(SYS_munmap, page_, 2 * page_size()), 0);
  AllKeys all;
  EXPECT_TRUE(all.has(key_));
}

// The quarantined numbers, by pkeys_get_quarantined.
std::vector<int> quarantined() {
  std::vector<int> out(64);
  const int n = pkeys_get_quarantined(out.data(), static_cast<int>(out.size()));
  out.resize(n < 0 ? 0 : static_cast<std::size_t>(n));
  return out;
}

// Unmapping the last range through pkeys ends the quarantine there and
// then, also after the range moved (mremap).
TEST_F(SafeFree, UnmappingTheLastRangeEndsTheQuarantine) {
  ASSERT_EQ(pkey_free(key_), 0) << errno_str();
  EXPECT_EQ(quarantined(), std::vector<int>{key_});
  void* moved = ::mremap(page_, 2 * page_size(), 2 * page_size(), MREMAP_MAYMOVE | MREMAP_FIXED,
                         static_cast<char*>(map_pages(2)));
  ASSERT_NE(moved, MAP_FAILED) << errno_str();
  EXPECT_FALSE(can_read(moved)) << "the moved pages keep the lock";
  EXPECT_EQ(quarantined(), std::vector<int>{key_}) << "the moved pages still carry it";
  ASSERT_EQ(::munmap(moved, 2 * page_size()), 0);
  EXPECT_EQ(quarantined(), std::vector<int>{});
}

TEST_F(SafeFree, ReclaimFindsPagesUnmappedBehindPkeysBack) {
  ASSERT_EQ(pkey_free(key_), 0) << errno_str();
  EXPECT_EQ(pkeys_reclaim_keys(), 0) << "the pages are still mapped";
  EXPECT_EQ(quarantined(), std::vector<int>{key_});
  ASSERT_EQ(::syscall(SYS_munmap, page_, 2 * page_size()), 0);
  EXPECT_EQ(pkeys_reclaim_keys(), 1);
  EXPECT_EQ(quarantined(), std::vector<int>{});
  EXPECT_EQ(pkeys_reclaim_keys(), 0);
}

// A failed read of the mappings proves nothing: the free still succeeds,
// the number stays quarantined, and no other key's records are dropped.
TEST_F(SafeFree, QuarantineHoldsWhenTheMappingsCannotBeRead) {
  const int other = pkey_alloc(0, 0);
  ASSERT_GT(other, 0);
  void* other_page = map_pages(1);
  ASSERT_EQ(pkey_mprotect(other_page, page_size(), PROT_READ | PROT_WRITE, other), 0);
  ASSERT_EQ(::syscall(SYS_munmap, page_, 2 * page_size()), 0);  // only /proc can tell
  // A rights change before the descriptors run out: UBSan checks a virtual
  // call's object the first time through a pipe, and without a descriptor
  // it would take pkeys' own object for an invalid one.
  ASSERT_EQ(pkey_set(other, PKEY_DISABLE_WRITE), 0);
  ASSERT_EQ(pkey_set(other, 0), 0);
  int freed = -1, reclaimed = -1;
  {
    NoDescriptorsLeft no_fds;
    ASSERT_TRUE(no_fds.full());
    freed = pkey_free(key_);
    reclaimed = pkeys_reclaim_keys();
  }
  EXPECT_EQ(freed, 0);
  EXPECT_EQ(reclaimed, 0) << "a number was released on a failed read";
  EXPECT_EQ(quarantined(), std::vector<int>{key_});
  ASSERT_EQ(pkey_set(other, PKEY_DISABLE_ACCESS), 0);
  EXPECT_FALSE(can_read(other_page)) << "another key's records were dropped";
  EXPECT_EQ(pkeys_reclaim_keys(), 1) << "readable again: the pages are gone";
  ASSERT_EQ(::munmap(other_page, page_size()), 0);
  EXPECT_EQ(pkey_free(other), 0);
}

TEST_F(SafeFree, StrictModeRefusesAsBefore) {
  const int mode = pkeys_get_free_mode();
  ASSERT_EQ(pkeys_set_free_mode(PKEYS_FREE_STRICT), 0);
  EXPECT_ERRNO(EBUSY, pkey_free(key_));
  EXPECT_EQ(pkey_query(key_), 0) << "a refused free keeps the key";
  EXPECT_EQ(quarantined(), std::vector<int>{});
  ASSERT_EQ(pkeys_set_free_mode(PKEYS_FREE_QUARANTINE), 0);
  EXPECT_EQ(pkey_free(key_), 0);
  EXPECT_ERRNO(EINVAL, pkeys_set_free_mode(2));
  EXPECT_EQ(pkeys_get_free_mode(), PKEYS_FREE_QUARANTINE) << "a refused mode changes nothing";
  ASSERT_EQ(pkeys_set_free_mode(mode), 0);
  ASSERT_EQ(::munmap(page_, 2 * page_size()), 0);
}

TEST(Quarantine, GetQuarantinedChecksItsInput) {
  EXPECT_ERRNO(EINVAL, pkeys_get_quarantined(nullptr, 1));
  EXPECT_ERRNO(EINVAL, pkeys_get_quarantined(nullptr, -1));
  EXPECT_GE(pkeys_get_quarantined(nullptr, 0), 0) << "a count alone";
}
