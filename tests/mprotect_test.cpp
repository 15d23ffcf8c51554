// SPDX-License-Identifier: MIT
// pkey_mprotect: argument checks and nothing changed on failure.
#include <gtest/gtest.h>

#include <sys/mman.h>

#include <cerrno>
#include <vector>

#include "pkeys/pkeys.h"
#include "probe.hpp"

using namespace pkeys_test;

TEST(Mprotect, RejectsKeysNotAllocated) {
  void* p = map_pages(1);
  const int k = pkey_alloc(0, 0);
  ASSERT_GT(k, 0);
  ASSERT_EQ(pkey_free(k), 0);
  for (int bad : {k, -2, pkeys_max_keys(), 4096}) {
    EXPECT_ERRNO(EINVAL, pkey_mprotect(p, page_size(), PROT_READ, bad)) << bad;
  }
  EXPECT_TRUE(can_write(p)) << "a refused call changes nothing";
  ASSERT_EQ(::munmap(p, page_size()), 0);
}

TEST(Mprotect, PassesOnMprotectErrors) {
  const int k = pkey_alloc(0, PKEY_DISABLE_ACCESS);
  ASSERT_GT(k, 0);
  auto* p = static_cast<char*>(map_pages(2));
  EXPECT_ERRNO(EINVAL, pkey_mprotect(p + 1, page_size(), PROT_READ, k)) << "unaligned address";
  ASSERT_EQ(::munmap(p + page_size(), page_size()), 0);
  EXPECT_ERRNO(ENOMEM, pkey_mprotect(p + page_size(), page_size(), PROT_READ, k)) << "unmapped range";
  EXPECT_ERRNO(EINVAL, pkey_mprotect(p, page_size(), 0x40000000, k)) << "bad protection bits";
  // Nothing was tagged: the page is still writable and the key frees.
  EXPECT_TRUE(can_write(p));
  EXPECT_EQ(pkey_free(k), 0) << "no page carries the key";
  ASSERT_EQ(::munmap(p, page_size()), 0);
}

// [mapped page][hole]: the kernel would change the first page before it
// finds the hole. Every tagging path fails first and changes nothing.
TEST(Mprotect, AFailureOverAHoleChangesNoPage) {
  const int k = pkey_alloc(0, 0);
  ASSERT_GT(k, 0);
  const int v = pkeys_vkey_create(0);
  ASSERT_GT(v, 0);
  auto* p = static_cast<char*>(map_pages(2));
  ASSERT_EQ(::munmap(p + page_size(), page_size()), 0);
  EXPECT_ERRNO(ENOMEM, pkey_mprotect(p, 2 * page_size(), PROT_READ, k));
  EXPECT_ERRNO(ENOMEM, pkey_mprotect(p, 2 * page_size(), PROT_READ, 0));
  EXPECT_ERRNO(ENOMEM, pkeys_vkey_mprotect(p, 2 * page_size(), PROT_READ, v));
  EXPECT_TRUE(can_write(p)) << "the page before the hole changed";
  EXPECT_EQ(pkeys_get_ranges(nullptr, 0), 0) << "a record of a failed call";
  ASSERT_EQ(pkey_set(k, PKEY_DISABLE_ACCESS), 0);
  EXPECT_TRUE(can_write(p)) << "the page carries the key after all";
  ASSERT_EQ(pkey_set(k, 0), 0);
  EXPECT_EQ(pkey_free(k), 0) << "a page carries the key";
  EXPECT_EQ(pkeys_vkey_destroy(v), 0);
  ASSERT_EQ(::munmap(p, page_size()), 0);
}

// MREMAP_DONTUNMAP moves the pages and leaves the old range mapped, with
// the same key in the kernel: both ranges carry it.
TEST(Mprotect, MremapDontunmapKeepsTheKeyOnBothRanges) {
#ifndef MREMAP_DONTUNMAP
  constexpr int MREMAP_DONTUNMAP = 4;
#endif
  const int k = pkey_alloc(0, 0);
  ASSERT_GT(k, 0);
  auto* p = static_cast<char*>(map_pages(1));
  ASSERT_EQ(pkey_mprotect(p, page_size(), PROT_READ | PROT_WRITE, k), 0);
  p[0] = 7;
  void* q = ::mremap(p, page_size(), page_size(), MREMAP_MAYMOVE | MREMAP_DONTUNMAP);
  if (q == MAP_FAILED && errno == EINVAL) GTEST_SKIP() << "the kernel has no MREMAP_DONTUNMAP (Linux 5.7+)";
  ASSERT_NE(q, MAP_FAILED) << errno_str();
  EXPECT_EQ(static_cast<char*>(q)[0], 7);
  // Both in the records (one range when the kernel put them side by side).
  pkeys_range r[4];
  const int n = pkeys_get_ranges(r, 4);
  ASSERT_GE(n, 1);
  const char* const both[] = {p, static_cast<const char*>(q)};
  for (const char* a : both) {
    bool tagged = false;
    for (int i = 0; i < n && i < 4; ++i)
      tagged |= r[i].pkey == k && a >= static_cast<char*>(r[i].start) && a < static_cast<char*>(r[i].start) + r[i].len;
    EXPECT_TRUE(tagged) << (a == p ? "the old range" : "the new range") << " is not recorded with the key";
  }
  ASSERT_EQ(pkey_set(k, PKEY_DISABLE_ACCESS), 0);
  EXPECT_FALSE(can_read(p)) << "the old range escaped the key";
  EXPECT_FALSE(can_read(q));
  ASSERT_EQ(pkey_set(k, 0), 0);
  EXPECT_ERRNO(EBUSY, pkeys_free_strict(k)) << "pages carry the key";
  ASSERT_EQ(::munmap(p, page_size()), 0);
  ASSERT_EQ(::munmap(q, page_size()), 0);
  EXPECT_EQ(pkey_free(k), 0);
}

TEST(Mprotect, MinusOneIsPlainMprotectAndZeroUntags) {
  void* p = map_pages(1);
  ASSERT_EQ(pkey_mprotect(p, page_size(), PROT_READ, -1), 0);
  EXPECT_TRUE(can_read(p));
  EXPECT_FALSE(can_write(p));
  const int k = pkey_alloc(0, PKEY_DISABLE_ACCESS);
  ASSERT_GT(k, 0);
  ASSERT_EQ(pkey_mprotect(p, page_size(), PROT_READ | PROT_WRITE, k), 0);
  EXPECT_FALSE(can_read(p));
  ASSERT_EQ(pkey_mprotect(p, page_size(), PROT_READ | PROT_WRITE, 0), 0);
  EXPECT_TRUE(can_write(p)) << "untagged pages ignore the key's rights";
  EXPECT_EQ(pkey_free(k), 0);
  ASSERT_EQ(::munmap(p, page_size()), 0);
}

TEST(Mprotect, PartOfARangeCanBeRetagged) {
  const int a = pkey_alloc(0, 0);
  const int b = pkey_alloc(0, 0);
  ASSERT_GT(a, 0);
  ASSERT_GT(b, 0);
  auto* p = static_cast<char*>(map_pages(3));
  ASSERT_EQ(pkey_mprotect(p, 3 * page_size(), PROT_READ | PROT_WRITE, a), 0);
  ASSERT_EQ(pkey_mprotect(p + page_size(), page_size(), PROT_READ | PROT_WRITE, b), 0);
  ASSERT_EQ(pkey_set(a, PKEY_DISABLE_ACCESS), 0);
  EXPECT_EQ(probe(p, Access::read).fault_key, a);
  EXPECT_TRUE(can_write(p + page_size())) << "the middle page now carries b";
  EXPECT_EQ(probe(p + 2 * page_size(), Access::read).fault_key, a);
  ASSERT_EQ(pkey_set(a, 0), 0);
  ASSERT_EQ(pkey_set(b, PKEY_DISABLE_WRITE), 0);
  EXPECT_EQ(probe(p + page_size(), Access::write).fault_key, b);
  EXPECT_TRUE(can_write(p + 2 * page_size()));
  ASSERT_EQ(pkey_set(b, 0), 0);
  ASSERT_EQ(::munmap(p, 3 * page_size()), 0);
  EXPECT_EQ(pkey_free(a), 0);
  EXPECT_EQ(pkey_free(b), 0);
}

TEST(Mprotect, MremapCarriesTheKeyAlong) {
  const int k = pkey_alloc(0, 0);
  ASSERT_GT(k, 0);
  void* p = map_pages(2);
  ASSERT_EQ(pkey_mprotect(p, 2 * page_size(), PROT_READ | PROT_WRITE, k), 0);
  void* q = ::mremap(p, 2 * page_size(), 4 * page_size(), MREMAP_MAYMOVE);
  ASSERT_NE(q, MAP_FAILED);
  ASSERT_EQ(pkey_set(k, PKEY_DISABLE_ACCESS), 0);
  EXPECT_EQ(probe(q, Access::read).fault_key, k);
  ASSERT_EQ(pkey_set(k, 0), 0);
  EXPECT_ERRNO(EBUSY, pkeys_free_strict(k)) << "the moved pages still carry the key";
  ASSERT_EQ(::munmap(q, 4 * page_size()), 0);
  EXPECT_EQ(pkey_free(k), 0);
}

TEST(Mprotect, RangesAreObservable) {
  const int k = pkey_alloc(0, 0);
  ASSERT_GT(k, 0);
  const int v = pkeys_vkey_create(0);
  ASSERT_GT(v, 0);
  auto* p = static_cast<char*>(map_pages(3));
  ASSERT_EQ(pkey_mprotect(p, page_size(), PROT_READ, k), 0);
  ASSERT_EQ(pkeys_vkey_mprotect(p + 2 * page_size(), page_size(), PROT_READ | PROT_WRITE, v), 0);
  std::vector<pkeys_range> ranges(static_cast<std::size_t>(pkeys_get_ranges(nullptr, 0)));
  ASSERT_EQ(pkeys_get_ranges(ranges.data(), static_cast<int>(ranges.size())), static_cast<int>(ranges.size()));
  int seen = 0;
  for (const pkeys_range& r : ranges) {
    if (r.start == p) {
      EXPECT_EQ(r.len, page_size());
      EXPECT_EQ(r.pkey, k);
      EXPECT_EQ(r.vkey, 0);
      EXPECT_EQ(r.prot, PROT_READ);
      ++seen;
    }
    if (r.start == p + 2 * page_size()) {
      EXPECT_EQ(r.pkey, -1);
      EXPECT_EQ(r.vkey, v);
      ++seen;
    }
  }
  EXPECT_EQ(seen, 2);
  ASSERT_EQ(::munmap(p, 3 * page_size()), 0);
  for (int n = pkeys_get_ranges(nullptr, 0); n > 0; n = 0) {
    std::vector<pkeys_range> after(static_cast<std::size_t>(n));
    pkeys_get_ranges(after.data(), n);
    for (const pkeys_range& r : after) EXPECT_NE(r.start, p) << "unmapped ranges are gone";
  }
  EXPECT_EQ(pkey_free(k), 0);
  EXPECT_EQ(pkeys_vkey_destroy(v), 0);
}
