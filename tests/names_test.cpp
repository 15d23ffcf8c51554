// SPDX-License-Identifier: MIT
// The project's own names and the first names they replace: both work, and
// mean the same.
#include <gtest/gtest.h>

#include <cerrno>

#include "pkeys/pkeys.h"
#include "probe.hpp"

static_assert(PKEYS_ALLOC_ALL_THREADS == PKEY_ALLOC_ALL_THREADS);

TEST(Names, SetLabelAndItsAliasWriteWhatGetLabelReads) {
  const int k = pkey_alloc(PKEYS_ALLOC_ALL_THREADS, 0);
  ASSERT_GT(k, 0);
  char buf[64];
  ASSERT_EQ(pkeys_set_label(k, "new name"), 0);
  EXPECT_EQ(pkeys_get_label(k, buf, sizeof buf), 8);
  EXPECT_STREQ(buf, "new name");
  ASSERT_EQ(pkey_label(k, "old name"), 0);
  EXPECT_EQ(pkeys_get_label(k, buf, sizeof buf), 8);
  EXPECT_STREQ(buf, "old name");
  ASSERT_EQ(pkey_free(k), 0);
  EXPECT_ERRNO(EINVAL, pkeys_set_label(k, "freed"));
}
