// SPDX-License-Identifier: MIT
// pkey_set, pkey_get, pkey_query, and rights really enforced.
#include <gtest/gtest.h>

#include <cerrno>
#include <climits>

#include "pkeys/pkeys.h"
#include "probe.hpp"

using namespace pkeys_test;

#ifndef SEGV_PKUERR
#define SEGV_PKUERR 4
#endif

TEST(SetGet, RejectBadKeysAndRights) {
  const int k = pkey_alloc(0, 0);
  ASSERT_GT(k, 0);
  for (int bad : {-1, pkeys_max_keys(), 999}) {
    EXPECT_ERRNO(EINVAL, pkey_set(bad, 0));
    EXPECT_ERRNO(EINVAL, pkey_get(bad));
  }
  const int unallocated = k + 1 < pkeys_max_keys() ? k + 1 : k - 1;
  if (unallocated > 0 && pkey_query(unallocated) < 0) {
    EXPECT_ERRNO(EINVAL, pkey_set(unallocated, 0));
    EXPECT_ERRNO(EINVAL, pkey_get(unallocated));
  }
  for (unsigned bad_rights : {4u, 7u, 0x100u, 0x80000000u, UINT_MAX}) EXPECT_ERRNO(EINVAL, pkey_set(k, bad_rights)) << bad_rights;
  EXPECT_EQ(pkey_get(k), 0) << "a refused set changes nothing";
  EXPECT_EQ(pkey_free(k), 0);
}

// The register fast path (x86-pku) checks as the rest does: a freed key,
// numbers past the register's 16 that alias a held key's bits, and errno
// kept on success.
TEST(SetGet, FreedAndAliasingNumbersFailAndErrnoIsKept) {
  const int k = pkey_alloc(0, 0);
  ASSERT_GT(k, 0);
  errno = 4242;
  EXPECT_EQ(pkey_set(k, PKEY_DISABLE_WRITE), 0);
  EXPECT_EQ(pkey_get(k), PKEY_DISABLE_WRITE);
  EXPECT_EQ(errno, 4242) << "a successful call leaves errno alone";
  for (int alias : {k + 16, k + 32, k + 64, k - 32, k - 64, k | INT_MIN}) {
    EXPECT_ERRNO(EINVAL, pkey_set(alias, 0)) << alias;
    EXPECT_ERRNO(EINVAL, pkey_get(alias)) << alias;
  }
  EXPECT_EQ(pkey_get(k), PKEY_DISABLE_WRITE) << "a refused set changes nothing";
  ASSERT_EQ(pkey_free(k), 0);
  EXPECT_ERRNO(EINVAL, pkey_set(k, 0));
  EXPECT_ERRNO(EINVAL, pkey_get(k));
}

TEST(SetGet, KeyZeroIsReadableButNotRestrictable) {
  EXPECT_EQ(pkey_get(0), 0);
  EXPECT_EQ(pkey_query(0), 0);
  EXPECT_ERRNO(EINVAL, pkey_set(0, PKEY_DISABLE_ACCESS));
  EXPECT_ERRNO(EINVAL, pkey_set(0, PKEY_DISABLE_WRITE));
  EXPECT_EQ(pkey_set(0, 0), 0);
  EXPECT_EQ(pkey_get(0), 0);
}

TEST(Query, EbadfForAnyKeyNotAllocated) {
  for (int bad : {-1, 1000, pkeys_max_keys(), -5}) {
    EXPECT_ERRNO(EBADF, pkey_query(bad)) << bad;
  }
  const int k = pkey_alloc(0, PKEY_DISABLE_WRITE);
  ASSERT_GT(k, 0);
  EXPECT_EQ(pkey_query(k), PKEY_DISABLE_WRITE);
  ASSERT_EQ(pkey_free(k), 0);
  EXPECT_ERRNO(EBADF, pkey_query(k));
}

class Enforcement : public ::testing::Test {
 protected:
  void SetUp() override {
    key_ = pkey_alloc(0, 0);
    ASSERT_GT(key_, 0);
    page_ = map_pages(1);
    static_cast<char*>(page_)[0] = 42;
    ASSERT_EQ(pkey_mprotect(page_, page_size(), PROT_READ | PROT_WRITE, key_), 0);
  }
  void TearDown() override {
    ASSERT_EQ(pkey_set(key_, 0), 0);
    ASSERT_EQ(::munmap(page_, page_size()), 0);
    ASSERT_EQ(pkey_free(key_), 0);
  }
  void expect_key_fault(const Outcome& o) {
    EXPECT_TRUE(o.faulted) << describe(o);
    EXPECT_EQ(o.signo, SIGSEGV) << describe(o);
    EXPECT_EQ(o.code, hardware_backend() ? SEGV_PKUERR : SEGV_ACCERR) << describe(o);
    EXPECT_EQ(o.fault_key, key_) << "pkeys_fault_pkey names the key: " << describe(o);
  }
  int key_ = -1;
  void* page_ = nullptr;
};

TEST_F(Enforcement, DisableAccessBlocksReadAndWrite) {
  ASSERT_EQ(pkey_set(key_, PKEY_DISABLE_ACCESS), 0);
  EXPECT_EQ(pkey_get(key_), PKEY_DISABLE_ACCESS);
  expect_key_fault(probe(page_, Access::read));
  expect_key_fault(probe(page_, Access::write));
}

TEST_F(Enforcement, DisableWriteBlocksOnlyWrites) {
  ASSERT_EQ(pkey_set(key_, PKEY_DISABLE_WRITE), 0);
  const Outcome r = probe(page_, Access::read);
  EXPECT_FALSE(r.faulted) << describe(r);
  expect_key_fault(probe(page_, Access::write));
}

TEST_F(Enforcement, NoRestrictionAllowsBoth) {
  ASSERT_EQ(pkey_set(key_, PKEY_DISABLE_ACCESS), 0);
  ASSERT_EQ(pkey_set(key_, 0), 0);
  EXPECT_TRUE(can_read(page_));
  EXPECT_TRUE(can_write(page_));
  EXPECT_EQ(static_cast<char*>(page_)[0], 42) << "contents survive the rights changes";
}

TEST_F(Enforcement, PlainMprotectKeepsTheKey) {
  ASSERT_EQ(pkey_set(key_, PKEY_DISABLE_ACCESS), 0);
  // Like the hardware, which keeps a page's key across mprotect.
  ASSERT_EQ(::mprotect(page_, page_size(), PROT_READ), 0);
  expect_key_fault(probe(page_, Access::read));
  ASSERT_EQ(pkey_set(key_, 0), 0);
  EXPECT_TRUE(can_read(page_));
  EXPECT_FALSE(can_write(page_)) << "the page is read-only now";
  ASSERT_EQ(pkey_mprotect(page_, page_size(), PROT_READ | PROT_WRITE, -1), 0);
  ASSERT_EQ(pkey_set(key_, PKEY_DISABLE_WRITE), 0);
  expect_key_fault(probe(page_, Access::write));
}

TEST_F(Enforcement, ManySeparateRangesOnOneKey) {
  // 64 ranges with a gap page between each.
  const std::size_t n = 64;
  auto* base = static_cast<char*>(map_pages(2 * n));
  for (std::size_t i = 0; i < n; ++i)
    ASSERT_EQ(pkey_mprotect(base + 2 * i * page_size(), page_size(), PROT_READ | PROT_WRITE, key_), 0);
  ASSERT_EQ(pkey_set(key_, PKEY_DISABLE_ACCESS), 0);
  for (std::size_t i : {std::size_t{0}, n / 2, n - 1}) {
    expect_key_fault(probe(base + 2 * i * page_size(), Access::read));
    EXPECT_TRUE(can_write(base + (2 * i + 1) * page_size())) << "gap pages are not tagged";
  }
  ASSERT_EQ(pkey_set(key_, 0), 0);
  EXPECT_TRUE(can_write(base + 2 * (n - 1) * page_size()));
  ASSERT_EQ(::munmap(base, 2 * n * page_size()), 0);
}

TEST_F(Enforcement, FaultPkeyIgnoresOtherFaults) {
  void* ro = map_pages(1);
  ASSERT_EQ(::mprotect(ro, page_size(), PROT_READ), 0);
  const Outcome o = probe(ro, Access::write);
  EXPECT_TRUE(o.faulted);
  EXPECT_EQ(o.fault_key, -1) << "a plain protection fault is no key's doing";
  siginfo_t si{};
  si.si_signo = SIGBUS;
  EXPECT_EQ(pkeys_fault_pkey(&si), -1);
  EXPECT_EQ(pkeys_fault_pkey(nullptr), -1);
  ASSERT_EQ(::munmap(ro, page_size()), 0);
}
