// SPDX-License-Identifier: MIT
// pkey_alloc and pkey_free: argument checks, order, exhaustion.
#include <gtest/gtest.h>

#include <cerrno>
#include <vector>

#include "pkeys/pkeys.h"
#include "probe.hpp"

TEST(Alloc, RejectsFlagsAndBadRights) {
  EXPECT_ERRNO(EINVAL, pkey_alloc(1, 0));
  EXPECT_ERRNO(EINVAL, pkey_alloc(0x80000000u, 0));
  for (unsigned bad : {4u, 8u, 7u, 0xffffffffu}) {
    EXPECT_ERRNO(EINVAL, pkey_alloc(0, bad)) << bad;
  }
}

TEST(Alloc, GivesTheRequestedRightsToTheCaller) {
  for (unsigned r : {0u, 1u, 2u, 3u}) {
    const int k = pkey_alloc(0, r);
    ASSERT_GT(k, 0) << r;
    EXPECT_EQ(pkey_get(k), static_cast<int>(r));
    EXPECT_EQ(pkey_query(k), static_cast<int>(r));
    EXPECT_EQ(pkey_free(k), 0);
  }
}

TEST(Alloc, LowestFreeFirstAndExhaustion) {
  std::vector<int> keys;
  for (;;) {
    errno = 0;
    const int k = pkey_alloc(0, 0);
    if (k < 0) {
      EXPECT_EQ(errno, ENOSPC);
      break;
    }
    EXPECT_GE(k, 1);
    EXPECT_LT(k, pkeys_max_keys());
    if (!keys.empty()) {
      EXPECT_GT(k, keys.back()) << "keys come lowest first";
    }
    keys.push_back(k);
    ASSERT_LE(keys.size(), 64u);
  }
  ASSERT_GE(keys.size(), 2u);
  EXPECT_LE(static_cast<int>(keys.size()), pkeys_max_keys() - 1);
  // A free makes room, and the freed number is the lowest free one.
  const int middle = keys[keys.size() / 2];
  ASSERT_EQ(pkey_free(middle), 0);
  EXPECT_EQ(pkey_alloc(0, 0), middle);
  EXPECT_ERRNO(ENOSPC, pkey_alloc(0, 0));
  for (int k : keys) EXPECT_EQ(pkey_free(k), 0);
}

TEST(Free, RejectsKeysNotAllocated) {
  for (int bad : {-1, 0, pkeys_max_keys(), 1000, -1000}) {
    EXPECT_ERRNO(EINVAL, pkey_free(bad)) << bad;
  }
  const int k = pkey_alloc(0, 0);
  ASSERT_GT(k, 0);
  ASSERT_EQ(pkey_free(k), 0);
  EXPECT_ERRNO(EINVAL, pkey_free(k)) << "double free";
}

TEST(Backend, ReportsItself) {
  const std::string name = pkeys_backend();
  const unsigned caps = pkeys_capabilities();
  if (name == "x86-pku") {
    EXPECT_TRUE(caps & PKEYS_CAP_HARDWARE);
    EXPECT_TRUE(caps & PKEYS_CAP_PER_THREAD_RIGHTS);
    EXPECT_TRUE(caps & PKEYS_CAP_FAULT_PKEY);
  } else {
    ASSERT_EQ(name, "emulated");
    EXPECT_EQ(caps & (PKEYS_CAP_HARDWARE | PKEYS_CAP_PER_THREAD_RIGHTS | PKEYS_CAP_FAULT_PKEY), 0u);
  }
  EXPECT_EQ(pkeys_max_keys(), 16);
  EXPECT_NE(std::string(pkeys_backend_reason()), "");
}

TEST(Errno, UntouchedOnSuccess) {
  errno = 12345;
  const int k = pkey_alloc(0, 0);
  ASSERT_GT(k, 0);
  EXPECT_EQ(errno, 12345);
  EXPECT_EQ(pkey_set(k, PKEY_DISABLE_WRITE), 0);
  EXPECT_EQ(pkey_get(k), PKEY_DISABLE_WRITE);
  EXPECT_EQ(pkey_free(k), 0);
  EXPECT_EQ(errno, 12345);
}
