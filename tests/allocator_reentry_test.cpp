// SPDX-License-Identifier: MIT
// pkeys inside a program whose malloc calls mmap, munmap, mremap and
// mprotect (allocators/mmap_malloc.cpp: every block is a mapping of its
// own). pkeys allocates while it holds its lock (records that grow or
// split, labels, vkeys); that malloc then enters pkeys' interposed mmap
// family on the same thread, which must not take the lock again: before,
// the second pkey_mprotect of a program hung for ever. Every test here
// makes such calls with ranges already tagged (the interposers skip all
// bookkeeping while none is), then checks that the records describe the
// program's ranges alone. A hang shows as a timeout (ctest TIMEOUT; the
// PKU lane's per-program limit).
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cerrno>
#include <memory>
#include <string>
#include <vector>

#include "allocators/mmap_malloc.hpp"
#include "pkeys/pkeys.h"
#include "probe.hpp"

using namespace pkeys_test;

namespace {

std::vector<pkeys_range> ranges() {
  std::vector<pkeys_range> out(64);
  const int n = pkeys_get_ranges(out.data(), static_cast<int>(out.size()));
  EXPECT_GE(n, 0) << errno_str();
  out.resize(n < 0 ? 0 : static_cast<std::size_t>(n));
  return out;
}

// The recorded ranges of `key`, as (first page index, pages) in `base`.
std::vector<std::pair<long, long>> pieces_of(int key, char* base) {
  std::vector<std::pair<long, long>> out;
  for (const pkeys_range& r : ranges())
    if (r.pkey == key)
      out.emplace_back((static_cast<char*>(r.start) - base) / static_cast<long>(page_size()),
                       static_cast<long>(r.len / page_size()));
  return out;
}

class AllocatorReentry : public ::testing::Test {
 protected:
  void SetUp() override {
    // The replacement must be the malloc in use, or nothing here is tested.
    const long before = mmap_malloc_calls();
    auto probe_block = std::make_unique<std::string>(100, 'x');
    ASSERT_GT(mmap_malloc_calls(), before) << "operator new did not reach the test's malloc";
    key_ = pkey_alloc(0, 0);
    ASSERT_GT(key_, 0) << errno_str();
    base_ = static_cast<char*>(map_pages(kPages));
    // The first tagged range turns the interposers' bookkeeping on.
    ASSERT_EQ(pkey_mprotect(page(0), page_size(), PROT_READ | PROT_WRITE, key_), 0) << errno_str();
  }
  void TearDown() override {
    if (base_) {
      EXPECT_EQ(::munmap(base_, kPages * page_size()), 0) << errno_str();
    }
    if (key_ > 0) {
      EXPECT_EQ(pkey_free(key_), 0) << errno_str();
    }
  }
  char* page(long i) const { return base_ + i * static_cast<long>(page_size()); }

  static constexpr long kPages = 16;
  int key_ = -1;
  char* base_ = nullptr;
};

}  // namespace

TEST_F(AllocatorReentry, PkeyMprotectOfManyRanges) {
  // Every other page: each a record of its own, so the records grow.
  for (long i = 2; i < kPages; i += 2)
    ASSERT_EQ(pkey_mprotect(page(i), page_size(), PROT_READ | PROT_WRITE, key_), 0) << "page " << i << ": "
                                                                                     << errno_str();
  const auto got = pieces_of(key_, base_);
  ASSERT_EQ(got.size(), static_cast<std::size_t>(kPages / 2));
  for (long i = 0; i < kPages / 2; ++i) EXPECT_EQ(got[i], std::make_pair(2 * i, 1L));
  // Split one range in three, and join the pieces again.
  ASSERT_EQ(pkey_mprotect(page(0), 4 * page_size(), PROT_READ | PROT_WRITE, key_), 0) << errno_str();
  ASSERT_EQ(pkey_mprotect(page(1), page_size(), PROT_READ, key_), 0) << errno_str();
  EXPECT_EQ(pieces_of(key_, base_).front(), std::make_pair(0L, 1L));
  EXPECT_ERRNO(EBUSY, pkeys_free_strict(key_)) << "tagged pages are mapped";
}

TEST_F(AllocatorReentry, MunmapMremapAndMprotectOfTaggedRanges) {
  ASSERT_EQ(pkey_mprotect(page(2), 8 * page_size(), PROT_READ | PROT_WRITE, key_), 0) << errno_str();
  // A hole in the middle of a tagged range: its record splits in two.
  ASSERT_EQ(::munmap(page(5), page_size()), 0) << errno_str();
  EXPECT_EQ(pieces_of(key_, base_), (std::vector<std::pair<long, long>>{{0, 1}, {2, 3}, {6, 4}}));
  // A plain mprotect of part of a tagged range keeps its key.
  ASSERT_EQ(::mprotect(page(7), page_size(), PROT_READ), 0) << errno_str();
  EXPECT_EQ(pieces_of(key_, base_), (std::vector<std::pair<long, long>>{{0, 1}, {2, 3}, {6, 1}, {7, 1}, {8, 2}}));
  // The tagged range at the end moves, and its record with it.
  void* moved = ::mremap(page(8), 2 * page_size(), 4 * page_size(), MREMAP_MAYMOVE);
  ASSERT_NE(moved, MAP_FAILED) << errno_str();
  bool found = false;
  for (const pkeys_range& r : ranges()) {
    if (r.start == moved) {
      found = true;
      EXPECT_EQ(r.pkey, key_);
    }
  }
  EXPECT_TRUE(found) << "the moved range keeps its record";
  ASSERT_EQ(::munmap(moved, 4 * page_size()), 0) << errno_str();
}

TEST_F(AllocatorReentry, KeysAndLabelsWhileRangesAreTagged) {
  std::vector<int> keys;
  for (;;) {
    const int k = pkey_alloc(0, PKEY_DISABLE_WRITE);
    if (k < 0) {
      EXPECT_EQ(errno, ENOSPC) << errno_str();
      break;
    }
    keys.push_back(k);
    const std::string label = "allocator key " + std::to_string(k);
    EXPECT_EQ(pkeys_set_label(k, label.c_str()), 0) << errno_str();
    EXPECT_EQ(pkey_mprotect(page(2 + static_cast<long>(keys.size() % 8)), page_size(), PROT_READ | PROT_WRITE, k), 0)
        << errno_str();
    EXPECT_EQ(pkey_set(k, PKEY_DISABLE_ACCESS), 0) << errno_str();
  }
  EXPECT_FALSE(keys.empty()) << "no key besides the fixture's";
  // Untag, then free every key.
  ASSERT_EQ(pkey_mprotect(page(1), (kPages - 1) * page_size(), PROT_READ | PROT_WRITE, 0), 0) << errno_str();
  for (int k : keys) EXPECT_EQ(pkey_free(k), 0) << "key " << k << ": " << errno_str();
}

TEST_F(AllocatorReentry, VKeysWhileRangesAreTagged) {
  std::vector<int> vkeys;
  for (long i = 0; i < 12; ++i) {
    const int v = pkeys_vkey_create(PKEY_DISABLE_ACCESS);
    ASSERT_GT(v, 0) << errno_str();
    vkeys.push_back(v);
    ASSERT_EQ(pkeys_vkey_mprotect(page(2 + i), page_size(), PROT_READ | PROT_WRITE, v), 0) << errno_str();
  }
  // More vkeys open than the hardware cache holds: evictions retag pages.
  for (int v : vkeys) {
    if (pkeys_vkey_begin(v, 0) != 0) {
      EXPECT_EQ(errno, EBUSY) << errno_str();
      continue;
    }
    EXPECT_EQ(pkeys_vkey_end(v), 0) << errno_str();
    EXPECT_EQ(pkeys_vkey_set(v, PKEY_DISABLE_WRITE), 0) << errno_str();
  }
  ASSERT_EQ(pkeys_vkey_mprotect(page(2), 12 * page_size(), PROT_READ | PROT_WRITE, 0), 0) << errno_str();
  for (int v : vkeys) EXPECT_EQ(pkeys_vkey_destroy(v), 0) << "vkey " << v << ": " << errno_str();
}

TEST_F(AllocatorReentry, TwoThreadsTagging) {
  const int other = pkey_alloc(0, 0);
  ASSERT_GT(other, 0) << errno_str();
  char* mine = base_ + 8 * static_cast<long>(page_size());
  int errors = 0;
  {
    ScopedThread t([&] {
      for (int round = 0; round < 200; ++round)
        for (long i = 0; i < 4; ++i)
          if (pkey_mprotect(mine + i * static_cast<long>(page_size()), page_size(), PROT_READ | PROT_WRITE,
                            (round + i) % 2 ? other : 0) != 0)
            ++errors;
    });
    for (int round = 0; round < 200; ++round)
      for (long i = 1; i < 8; ++i)
        EXPECT_EQ(pkey_mprotect(page(i), page_size(), PROT_READ | PROT_WRITE, (round + i) % 2 ? key_ : 0), 0)
            << errno_str();
  }
  EXPECT_EQ(errors, 0);
  ASSERT_EQ(pkey_mprotect(mine, 4 * page_size(), PROT_READ | PROT_WRITE, 0), 0) << errno_str();
  EXPECT_EQ(pkey_free(other), 0) << errno_str();
}
