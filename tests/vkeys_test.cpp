// SPDX-License-Identifier: MIT
// Virtual keys: any number of domains, enforced on both backends; the
// hardware key cache, eviction without a lapse, pinning, and pkey_alloc
// keeping priority over the cache.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>
#include <vector>

#include "pkeys/pkeys.hpp"
#include "probe.hpp"

using namespace pkeys_test;

namespace {

struct VKeyPage {
  explicit VKeyPage(unsigned base = PKEY_DISABLE_ACCESS) : p(map_pages(1)) {
    v = pkeys_vkey_create(base);
    EXPECT_GT(v, 0) << errno_str();
    EXPECT_EQ(pkeys_vkey_mprotect(p, page_size(), PROT_READ | PROT_WRITE, v), 0) << errno_str();
  }
  ~VKeyPage() {
    EXPECT_EQ(::munmap(p, page_size()), 0) << errno_str();
    EXPECT_EQ(pkeys_vkey_destroy(v), 0) << errno_str();
  }
  void* p;
  int v;
};

pkeys_vkey_stats stats() {
  pkeys_vkey_stats s{};
  EXPECT_EQ(pkeys_vkey_get_stats(&s), 0) << errno_str();
  return s;
}

#define REQUIRE_CACHE()                                                                   \
  if (!per_thread_rights())                                                               \
  GTEST_SKIP() << "backend " << pkeys_backend() << " has no hardware key cache (every vkey uses mprotect)"

}  // namespace

TEST(VKeys, RejectBadArguments) {
  EXPECT_ERRNO(EINVAL, pkeys_vkey_create(4));
  for (int bad : {0, -1, 1 << 30}) {
    EXPECT_ERRNO(EINVAL, pkeys_vkey_destroy(bad));
    EXPECT_ERRNO(EINVAL, pkeys_vkey_begin(bad, 0));
  }
  const int v = pkeys_vkey_create(0);
  ASSERT_GT(v, 0) << errno_str();
  EXPECT_ERRNO(EINVAL, pkeys_vkey_begin(v, 8));
  EXPECT_ERRNO(EINVAL, pkeys_vkey_end(v)) << "not open in this thread";
  EXPECT_EQ(pkeys_vkey_get(v), 0);
  ASSERT_EQ(pkeys_vkey_destroy(v), 0) << errno_str();
  EXPECT_ERRNO(EINVAL, pkeys_vkey_destroy(v)) << "double destroy";
  EXPECT_EQ(pkeys_vkey_create(0), v) << "ids are reused";
  ASSERT_EQ(pkeys_vkey_destroy(v), 0) << errno_str();
}

TEST(VKeys, EnforcedOutsideBeginOpenInside) {
  VKeyPage page;
  static_cast<void>(page);
  const Outcome denied = probe(page.p, Access::read);
  EXPECT_TRUE(denied.faulted);
  EXPECT_EQ(denied.fault_vkey, page.v) << describe(denied);
  ASSERT_EQ(pkeys_vkey_begin(page.v, 0), 0) << errno_str();
  EXPECT_TRUE(can_write(page.p));
  std::memcpy(page.p, "domain", 7);
  ASSERT_EQ(pkeys_vkey_begin(page.v, PKEY_DISABLE_WRITE), 0) << "begins nest";
  EXPECT_TRUE(can_read(page.p));
  EXPECT_FALSE(can_write(page.p));
  ASSERT_EQ(pkeys_vkey_end(page.v), 0) << errno_str();
  EXPECT_TRUE(can_write(page.p)) << "the outer begin's rights are back";
  ASSERT_EQ(pkeys_vkey_end(page.v), 0) << errno_str();
  EXPECT_FALSE(can_read(page.p));
}

TEST(VKeys, ProcessWideSet) {
  VKeyPage page;
  ASSERT_EQ(pkeys_vkey_set(page.v, PKEY_DISABLE_WRITE), 0) << errno_str();
  EXPECT_EQ(pkeys_vkey_get(page.v), PKEY_DISABLE_WRITE);
  EXPECT_TRUE(can_read(page.p));
  EXPECT_FALSE(can_write(page.p));
  ASSERT_EQ(pkeys_vkey_begin(page.v, 0), 0) << errno_str();
  EXPECT_ERRNO(EBUSY, pkeys_vkey_set(page.v, 0)) << "open in a thread";
  ASSERT_EQ(pkeys_vkey_end(page.v), 0) << errno_str();
  EXPECT_FALSE(can_write(page.p)) << "back to the process-wide rights";
  ASSERT_EQ(pkeys_vkey_set(page.v, PKEY_DISABLE_ACCESS), 0) << errno_str();
  EXPECT_FALSE(can_read(page.p));
}

TEST(VKeys, DestroyIsRefusedWhileOpenOrTagged) {
  void* p = map_pages(1);
  const int v = pkeys_vkey_create(0);
  ASSERT_EQ(pkeys_vkey_mprotect(p, page_size(), PROT_READ | PROT_WRITE, v), 0) << errno_str();
  EXPECT_ERRNO(EBUSY, pkeys_vkey_destroy(v));
  ASSERT_EQ(pkeys_vkey_mprotect(p, page_size(), PROT_READ | PROT_WRITE, 0), 0) << errno_str();
  ASSERT_EQ(pkeys_vkey_begin(v, 0), 0) << errno_str();
  EXPECT_ERRNO(EBUSY, pkeys_vkey_destroy(v));
  ASSERT_EQ(pkeys_vkey_end(v), 0) << errno_str();
  EXPECT_EQ(pkeys_vkey_destroy(v), 0) << errno_str();
  EXPECT_TRUE(can_write(p));
  ASSERT_EQ(::munmap(p, page_size()), 0) << errno_str();
}

TEST(VKeys, PlainMprotectKeepsTheDomain) {
  VKeyPage page;
  ASSERT_EQ(::mprotect(page.p, page_size(), PROT_READ), 0) << errno_str();
  EXPECT_FALSE(can_read(page.p)) << "still closed after a plain mprotect";
  ASSERT_EQ(pkeys_vkey_begin(page.v, 0), 0) << errno_str();
  EXPECT_TRUE(can_read(page.p));
  EXPECT_FALSE(can_write(page.p)) << "the new protection holds";
  ASSERT_EQ(pkeys_vkey_end(page.v), 0) << errno_str();
}

TEST(VKeys, MoreDomainsThanKeysStayProtectedThroughEviction) {
  constexpr int kDomains = 40;
  std::vector<std::unique_ptr<VKeyPage>> pages;
  for (int i = 0; i < kDomains; ++i) pages.push_back(std::make_unique<VKeyPage>());
  const pkeys_vkey_stats before = stats();
  for (int round = 0; round < 2; ++round)
    for (int i = 0; i < kDomains; ++i) {
      ASSERT_EQ(pkeys_vkey_begin(pages[i]->v, 0), 0) << i;
      static_cast<int*>(pages[i]->p)[0] = i + round;
      ASSERT_EQ(pkeys_vkey_end(pages[i]->v), 0) << errno_str();
    }
  for (int i : {0, 1, kDomains / 2, kDomains - 1}) {
    const Outcome o = probe(pages[i]->p, Access::read);
    EXPECT_TRUE(o.faulted) << "domain " << i << " lapsed";
    EXPECT_EQ(o.fault_vkey, pages[i]->v);
    ASSERT_EQ(pkeys_vkey_begin(pages[i]->v, PKEY_DISABLE_WRITE), 0) << errno_str();
    EXPECT_EQ(static_cast<int*>(pages[i]->p)[0], i + 1) << "contents survive eviction";
    EXPECT_FALSE(can_write(pages[i]->p));
    ASSERT_EQ(pkeys_vkey_end(pages[i]->v), 0) << errno_str();
  }
  const pkeys_vkey_stats after = stats();
  EXPECT_EQ(after.live, before.live);
  if (per_thread_rights()) {
    EXPECT_GT(after.evictions, before.evictions);
    EXPECT_GT(after.misses, before.misses);
    EXPECT_LE(after.cached, after.capacity);
    EXPECT_EQ(after.pinned, 0u);
  }
}

TEST(VKeys, BeginFailsWithEbusyWhenEveryCachedKeyIsOpen) {
  REQUIRE_CACHE();
  ASSERT_EQ(pkeys_vkey_set_cache_limit(2), 0) << errno_str();
  {
    VKeyPage a, b, c;
    ASSERT_EQ(pkeys_vkey_begin(a.v, 0), 0) << errno_str();
    ASSERT_EQ(pkeys_vkey_begin(b.v, 0), 0) << errno_str();
    const pkeys_vkey_stats s = stats();
    EXPECT_EQ(s.pinned, 2u);
    EXPECT_ERRNO(EBUSY, pkeys_vkey_begin(c.v, 0));
    EXPECT_FALSE(can_read(c.p)) << "nothing half-done";
    EXPECT_TRUE(can_write(a.p));
    EXPECT_TRUE(can_write(b.p));
    EXPECT_ERRNO(EBUSY, pkeys_vkey_set_cache_limit(1)) << "would evict an open vkey";
    ASSERT_EQ(pkeys_vkey_end(b.v), 0) << errno_str();
    ASSERT_EQ(pkeys_vkey_begin(c.v, 0), 0) << "b was unpinned and evicted";
    EXPECT_TRUE(can_write(c.p));
    EXPECT_FALSE(can_read(b.p));
    ASSERT_EQ(pkeys_vkey_end(c.v), 0) << errno_str();
    ASSERT_EQ(pkeys_vkey_end(a.v), 0) << errno_str();
  }
  ASSERT_EQ(pkeys_vkey_set_cache_limit(8), 0) << errno_str();
}

TEST(VKeys, PkeyAllocTakesKeysBackFromTheCache) {
  REQUIRE_CACHE();
  ASSERT_EQ(pkeys_vkey_set_cache_limit(pkeys_max_keys() - 1), 0) << errno_str();
  {
    std::vector<std::unique_ptr<VKeyPage>> pages;
    for (int i = 0; i < pkeys_max_keys(); ++i) {
      pages.push_back(std::make_unique<VKeyPage>());
      ASSERT_EQ(pkeys_vkey_begin(pages.back()->v, 0), 0) << errno_str();
      ASSERT_EQ(pkeys_vkey_end(pages.back()->v), 0) << errno_str();
    }
    EXPECT_GE(stats().hardware_keys, 2u);
    std::vector<int> keys;
    for (int k; (k = pkey_alloc(0, 0)) > 0;) keys.push_back(k);
    EXPECT_EQ(static_cast<int>(keys.size()), pkeys_max_keys() - 1) << "every key the kernel has";
    EXPECT_EQ(stats().hardware_keys, 0u);
    for (auto& page : pages) EXPECT_FALSE(can_read(page->p)) << "evicted, still enforced";
    for (int k : keys) EXPECT_EQ(pkey_free(k), 0);
  }
  ASSERT_EQ(pkeys_vkey_set_cache_limit(8), 0) << errno_str();
}

TEST(VKeys, AHundredThousandDomains) {
  constexpr int kDomains = 100000;
  char* base = static_cast<char*>(::mmap(nullptr, kDomains * page_size(), PROT_READ | PROT_WRITE,
                                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
  ASSERT_NE(base, MAP_FAILED) << errno_str();
  std::vector<int> ids;
  ids.reserve(kDomains);
  for (int i = 0; i < kDomains; ++i) {
    const int v = pkeys_vkey_create(PKEY_DISABLE_ACCESS);
    ASSERT_GT(v, 0) << i << ": " << errno_str();
    ASSERT_EQ(pkeys_vkey_mprotect(base + i * page_size(), page_size(), PROT_READ | PROT_WRITE, v), 0)
        << i << ": " << errno_str();
    ids.push_back(v);
  }
  EXPECT_GE(stats().live, static_cast<unsigned long long>(kDomains));
  for (int i = 0; i < kDomains; i += 997) {
    char* p = base + static_cast<std::size_t>(i) * page_size();
    ASSERT_EQ(pkeys_vkey_begin(ids[i], 0), 0) << errno_str();
    p[0] = 1;
    ASSERT_EQ(pkeys_vkey_end(ids[i]), 0) << errno_str();
  }
  EXPECT_FALSE(can_read(base + 12345 * page_size()));
  EXPECT_EQ(probe(base + 997 * page_size(), Access::read).fault_vkey, ids[997]);
  ASSERT_EQ(::munmap(base, kDomains * page_size()), 0) << errno_str();
  for (int v : ids) ASSERT_EQ(pkeys_vkey_destroy(v), 0) << v << ": " << errno_str();
}

TEST(VKeys, CxxScope) {
  auto v = pkeys::vkey::create();
  ASSERT_TRUE(v);
  void* p = map_pages(1);
  ASSERT_FALSE(v->protect(p, page_size(), PROT_READ | PROT_WRITE));
  EXPECT_FALSE(can_read(p));
  {
    pkeys::vkey_scope open(*v, pkeys::rights::read_only());
    ASSERT_FALSE(open.error());
    EXPECT_TRUE(can_read(p));
    EXPECT_FALSE(can_write(p));
  }
  EXPECT_FALSE(can_read(p));
  EXPECT_EQ(v->destroy(), std::errc::device_or_resource_busy);
  ASSERT_EQ(::munmap(p, page_size()), 0) << errno_str();
  EXPECT_FALSE(v->destroy());
}

namespace {

// Sets the cache limit for a test and puts the old one back.
class CacheLimit {
 public:
  explicit CacheLimit(int n) : old_(static_cast<int>(stats().capacity)) {
    EXPECT_EQ(pkeys_vkey_set_cache_limit(n), 0) << errno_str();
  }
  ~CacheLimit() { EXPECT_EQ(pkeys_vkey_set_cache_limit(old_), 0) << errno_str(); }

 private:
  int old_;
};

// Every key pkey_alloc hands out now; the caller frees them.
std::vector<int> alloc_every_key() {
  std::vector<int> keys;
  for (int k; (k = pkey_alloc(0, 0)) > 0;) keys.push_back(k);
  return keys;
}

void free_keys(const std::vector<int>& keys) {
  for (int k : keys) EXPECT_EQ(pkey_free(k), 0) << k << ": " << errno_str();
}

}  // namespace

TEST(VKeys, PkeyAllocGetsEveryIdleCacheKey) {
  REQUIRE_CACHE();
  constexpr int kCache = 8;
  int program_keys;
  {
    CacheLimit empty(0);
    const std::vector<int> keys = alloc_every_key();
    program_keys = static_cast<int>(keys.size());
    free_keys(keys);
  }
  ASSERT_GE(program_keys, kCache) << "too few hardware keys for this test";
  CacheLimit limit(kCache);
  std::vector<std::unique_ptr<VKeyPage>> pages;
  for (int i = 0; i < kCache; ++i) {
    pages.push_back(std::make_unique<VKeyPage>());
    ASSERT_EQ(pkeys_vkey_begin(pages.back()->v, 0), 0) << errno_str();
    ASSERT_EQ(pkeys_vkey_end(pages.back()->v), 0) << errno_str();
  }
  ASSERT_EQ(stats().hardware_keys, static_cast<unsigned>(kCache));
  // The vkey cached last: the cache's last slot stays pinned.
  ASSERT_EQ(pkeys_vkey_begin(pages.back()->v, 0), 0) << errno_str();
  const std::vector<int> keys = alloc_every_key();
  EXPECT_EQ(static_cast<int>(keys.size()), program_keys - 1) << "every cached key but the open vkey's";
  EXPECT_EQ(stats().hardware_keys, 1u);
  EXPECT_TRUE(can_write(pages.back()->p)) << "the open vkey keeps its key";
  for (int i = 0; i + 1 < kCache; ++i) EXPECT_FALSE(can_read(pages[i]->p)) << i << ": evicted, still enforced";
  free_keys(keys);
  ASSERT_EQ(pkeys_vkey_end(pages.back()->v), 0) << errno_str();
}

TEST(VKeys, CacheLimitRefusedWithEbusyChangesNothing) {
  REQUIRE_CACHE();
  constexpr int kCache = 8, kOpen = 3;
  { CacheLimit empty(0); }  // fresh slots, filled in order
  CacheLimit limit(kCache);
  std::vector<std::unique_ptr<VKeyPage>> pages;
  for (int i = 0; i < kCache; ++i) {
    pages.push_back(std::make_unique<VKeyPage>());
    ASSERT_EQ(pkeys_vkey_begin(pages.back()->v, 0), 0) << errno_str();
    ASSERT_EQ(pkeys_vkey_end(pages.back()->v), 0) << errno_str();
  }
  // The first slots open: a cache that gave keys back from the end would
  // give back five before it found out.
  for (int i = 0; i < kOpen; ++i) ASSERT_EQ(pkeys_vkey_begin(pages[i]->v, 0), 0) << errno_str();
  const pkeys_vkey_stats before = stats();
  ASSERT_EQ(before.hardware_keys, static_cast<unsigned>(kCache));
  EXPECT_ERRNO(EBUSY, pkeys_vkey_set_cache_limit(kOpen - 1)) << "an open vkey would lose its key";
  const pkeys_vkey_stats after = stats();
  EXPECT_EQ(after.hardware_keys, before.hardware_keys) << "keys given back by a failed call";
  EXPECT_EQ(after.cached, before.cached);
  EXPECT_EQ(after.capacity, before.capacity);
  EXPECT_EQ(after.evictions, before.evictions);
  EXPECT_EQ(pkeys_vkey_set_cache_limit(kOpen), 0) << "every idle key can go";
  EXPECT_EQ(stats().hardware_keys, static_cast<unsigned>(kOpen));
  for (int i = 0; i < kOpen; ++i) {
    EXPECT_TRUE(can_write(pages[i]->p)) << i;
    ASSERT_EQ(pkeys_vkey_end(pages[i]->v), 0) << errno_str();
  }
}

// The figures pkeys_vkey_get_stats gives, and the recency order: a vkey
// used since the last miss is not the one the next miss evicts.
TEST(VKeys, HitsMissesAndRecency) {
  REQUIRE_CACHE();
  { CacheLimit empty(0); }  // fresh slots, filled in order
  CacheLimit limit(2);
  VKeyPage a, b, c;
  auto open_close = [](int v) {
    EXPECT_EQ(pkeys_vkey_begin(v, 0), 0) << errno_str();
    EXPECT_EQ(pkeys_vkey_end(v), 0) << errno_str();
  };
  const pkeys_vkey_stats s0 = stats();
  open_close(a.v);
  open_close(b.v);
  const pkeys_vkey_stats s1 = stats();
  EXPECT_EQ(s1.misses - s0.misses, 2u);
  EXPECT_EQ(s1.hits, s0.hits);
  EXPECT_EQ(s1.cached, 2u);
  for (int i = 0; i < 3; ++i) open_close(a.v);
  ASSERT_EQ(pkeys_vkey_begin(a.v, PKEY_DISABLE_WRITE), 0) << errno_str();  // nested: two pins
  ASSERT_EQ(pkeys_vkey_begin(a.v, 0), 0) << errno_str();
  EXPECT_EQ(stats().pinned, 1u);
  ASSERT_EQ(pkeys_vkey_end(a.v), 0) << errno_str();
  ASSERT_EQ(pkeys_vkey_end(a.v), 0) << errno_str();
  const pkeys_vkey_stats s2 = stats();
  EXPECT_EQ(s2.hits - s1.hits, 5u);
  EXPECT_EQ(s2.misses, s1.misses);
  EXPECT_EQ(s2.pinned, 0u);
  open_close(c.v);  // a miss: b, unused since the last miss, goes
  const pkeys_vkey_stats s3 = stats();
  EXPECT_EQ(s3.misses - s2.misses, 1u);
  EXPECT_EQ(s3.evictions - s2.evictions, 1u);
  EXPECT_EQ(s3.hits, s2.hits) << "an eviction loses no hit";
  open_close(a.v);
  const pkeys_vkey_stats s4 = stats();
  EXPECT_EQ(s4.hits - s3.hits, 1u) << "a, used since the last miss, stayed cached";
  EXPECT_EQ(s4.misses, s3.misses);
  open_close(b.v);
  EXPECT_EQ(stats().misses - s4.misses, 1u) << "b was the one evicted";
}

namespace {

// Ends a vkey from a thread_local destructor: those run before pkeys
// closes what the thread left open.
struct EndAtThreadExit {
  int vkey = 0;
  int* result = nullptr;
  ~EndAtThreadExit() {
    if (vkey > 0) *result = pkeys_vkey_end(vkey) == 0 ? 0 : errno;
  }
};
thread_local EndAtThreadExit t_end_at_exit;

}  // namespace

TEST(VKeys, AThreadThatExitsClosesItsOpenVKeys) {
  VKeyPage a, b;
  int begins = 0;
  {
    pkeys_test::ScopedThread t([&] {
      begins += pkeys_vkey_begin(a.v, 0) == 0;
      begins += pkeys_vkey_begin(b.v, PKEY_DISABLE_WRITE) == 0;
      begins += pkeys_vkey_begin(a.v, PKEY_DISABLE_WRITE) == 0;
    });
  }
  ASSERT_EQ(begins, 3) << "the thread's begins";
  EXPECT_EQ(stats().pinned, 0u);
  for (const VKeyPage* page : {&a, &b}) {
    EXPECT_FALSE(can_read(page->p)) << page->v << ": back to its process-wide rights";
    EXPECT_EQ(pkeys_vkey_set(page->v, PKEY_DISABLE_ACCESS), 0) << page->v << ": " << errno_str();
  }
  // ~VKeyPage: destroy succeeds.
}

TEST(VKeys, AThreadLocalDestructorCanStillEndItsVKey) {
  VKeyPage c;
  int end_in_destructor = -2;
  {
    pkeys_test::ScopedThread t([&] {
      if (pkeys_vkey_begin(c.v, 0) == 0) {
        // Fields, not an assigned temporary: its destructor would end the vkey at once.
        t_end_at_exit.vkey = c.v;
        t_end_at_exit.result = &end_in_destructor;
      }
    });
  }
  EXPECT_EQ(end_in_destructor, 0) << "thread_local destructors run before pkeys closes what is left open";
  EXPECT_EQ(stats().pinned, 0u);
}

// A child of fork has only the forking thread: a vkey another thread of
// the parent had open is not open in the child (not pinned for good, and
// on the emulation its pages are back to its base rights).
TEST(VKeys, AForkedChildDropsOtherThreadsOpens) {
  const int v = pkeys_vkey_create(PKEY_DISABLE_ACCESS);
  ASSERT_GT(v, 0) << errno_str();
  void* page = map_pages(1);
  ASSERT_EQ(pkeys_vkey_mprotect(page, page_size(), PROT_READ | PROT_WRITE, v), 0) << errno_str();
  std::atomic<int> phase{0};
  {
    pkeys_test::ScopedThread opener(
        [&] {
          if (pkeys_vkey_begin(v, 0) != 0) {
            phase = -1;
            return;
          }
          phase = 1;
          while (phase == 1) std::this_thread::yield();
          pkeys_vkey_end(v);
        },
        [&] { phase = 2; });
    while (phase == 0) std::this_thread::yield();
    ASSERT_EQ(phase.load(), 1) << "the other thread's begin failed";
    const pid_t child = ::fork();
    if (child == 0) {
      int failures = 0;
      if (can_read(page)) failures |= 1;
      if (pkeys_vkey_set(v, PKEY_DISABLE_WRITE) != 0) failures |= 2;
      ::_exit(failures);
    }
    ASSERT_GT(child, 0) << errno_str();
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child) << errno_str();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "in the child: bit 0 the vkey's pages readable, bit 1 pkeys_vkey_set failed (EBUSY: still open); status "
        << status;
  }
  ::munmap(page, page_size());
  EXPECT_EQ(pkeys_vkey_destroy(v), 0) << errno_str();
}
