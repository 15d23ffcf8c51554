// SPDX-License-Identifier: MIT
// 12 threads over 1024 virtual keys: random begin, access and end, each
// access checked to succeed or fault exactly as the rights say. Faults are
// recovered in-process with pkeys_sigsetjmp/pkeys_siglongjmp. Runs under
// ThreadSanitizer too.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <string>
#include <cerrno>
#include <random>
#include <thread>
#include <vector>

#include "pkeys/pkeys.h"
#include "pkeys/pkru.h"
#include "probe.hpp"

namespace {

constexpr int kThreads = 12;
constexpr int kDomains = 1024;
constexpr int kOpsPerThread = 2500;

thread_local pkeys_sigjmp_buf t_env;
thread_local volatile bool t_probing = false;

void on_segv(int sig, siginfo_t*, void*) {
  if (t_probing) pkeys_siglongjmp(t_env, 1);
  ::signal(sig, SIG_DFL);  // a real crash: let it happen
}

// Whether the access succeeded; a fault is caught and rolled back.
bool try_access(char* p, bool write) {
  t_probing = true;
  if (pkeys_sigsetjmp(t_env, 1) == 0) {
    // Atomic: threads touch the same domains at once, on purpose.
    if (write)
      __atomic_store_n(p, char{1}, __ATOMIC_RELAXED);
    else
      (void)__atomic_load_n(p, __ATOMIC_RELAXED);
    t_probing = false;
    return true;
  }
  t_probing = false;
  return false;
}

// The rights every thread opens domain i with: a function of i alone, so
// the emulation's process-wide rights agree between threads.
unsigned rights_of(int i) {
  static constexpr unsigned kRights[] = {0, PKEY_DISABLE_WRITE, PKEY_DISABLE_ACCESS};
  return kRights[i % 3];
}

// The smaps entry of the mapping holding `p`: its protection and key.
std::string describe_mapping(const void* p) {
  std::ifstream in("/proc/self/smaps");
  std::string line, out;
  bool inside = false;
  const auto addr = reinterpret_cast<std::uintptr_t>(p);
  while (std::getline(in, line)) {
    unsigned long lo, hi;
    char perms[8];
    if (std::sscanf(line.c_str(), "%lx-%lx %7s", &lo, &hi, perms) == 3) {
      inside = addr >= lo && addr < hi;
      if (inside) out = line.substr(0, 40);
    } else if (inside && line.rfind("ProtectionKey:", 0) == 0) {
      out += " " + line;
    }
  }
  return out;
}

}  // namespace

TEST(VKeysStress, TwelveThreadsThousandDomains) {
  const bool per_thread = (pkeys_capabilities() & PKEYS_CAP_PER_THREAD_RIGHTS) != 0;
  struct sigaction sa {}, old {};
  sa.sa_sigaction = on_segv;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER;
  ASSERT_EQ(::sigaction(SIGSEGV, &sa, &old), 0) << pkeys_test::errno_str();

  const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  char* base = static_cast<char*>(::mmap(nullptr, kDomains * page, PROT_READ | PROT_WRITE,
                                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(base, MAP_FAILED) << pkeys_test::errno_str();
  std::vector<int> ids(kDomains);
  for (int i = 0; i < kDomains; ++i) {
    ids[i] = pkeys_vkey_create(PKEY_DISABLE_ACCESS);
    ASSERT_GT(ids[i], 0) << i << ": " << pkeys_test::errno_str();
    ASSERT_EQ(pkeys_vkey_mprotect(base + i * page, page, PROT_READ | PROT_WRITE, ids[i]), 0)
        << i << ": " << pkeys_test::errno_str();
  }

  std::atomic<long> wrong{0}, wrong_outside{0}, unrestored{0}, errors{0}, busy{0}, opened{0}, checked{0};
  std::atomic<int> first_errno{0};
  std::vector<pkeys_test::ScopedThread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(1234 + t);
      std::uniform_int_distribution<int> pick(0, kDomains - 1);
      for (int op = 0; op < kOpsPerThread; ++op) {
        const int i = pick(rng);
        const unsigned r = rights_of(i);
        const std::uint32_t pkru_before = per_thread ? pkeys_rdpkru() : 0;
        if (pkeys_vkey_begin(ids[i], r) != 0) {
          if (errno != EBUSY) {
            int none = 0;
            first_errno.compare_exchange_strong(none, errno);
          }
          (errno == EBUSY ? busy : errors)++;
          continue;
        }
        ++opened;
        char* p = base + i * page;
        const bool write = rng() & 1;
        const bool allowed = write ? r == 0 : !(r & PKEY_DISABLE_ACCESS);
        if (try_access(p, write) != allowed) {
          if (++wrong <= 5)
            std::printf("domain %d (vkey %d) opened with rights %u: %s %s\n", i, ids[i], r,
                        write ? "write" : "read", allowed ? "faulted" : "succeeded");
        }
        ++checked;
        if (per_thread) {
          // A domain this thread has not opened stays closed to it, whatever
          // other threads have open.
          int j = pick(rng);
          if (j == i) j = (j + 1) % kDomains;
          if (try_access(base + j * page, false) && ++wrong_outside <= 5) {
            const unsigned pkru = pkeys_rdpkru();
            std::printf("domain %d (vkey %d) not open here: read succeeded; PKRU %08x, open %d; %s\n", j,
                        ids[j], pkru, ids[i], describe_mapping(base + j * page).c_str());
          }
          ++checked;
        }
        if (pkeys_vkey_end(ids[i]) != 0) {
          int none = 0;
          first_errno.compare_exchange_strong(none, errno);
          ++errors;
        }
        if (per_thread && pkeys_rdpkru() != pkru_before && ++unrestored <= 5)
          std::printf("PKRU %08x after end, %08x before begin\n", pkeys_rdpkru(), pkru_before);
      }
    });
  }
  for (auto& th : threads) th.join();
  ::sigaction(SIGSEGV, &old, nullptr);

  pkeys_vkey_stats s{};
  ASSERT_EQ(pkeys_vkey_get_stats(&s), 0) << pkeys_test::errno_str();
  std::printf("opened %ld, checked %ld accesses, EBUSY %ld; cache: %llu hits, %llu misses, %llu evictions\n",
              opened.load(), checked.load(), busy.load(), s.hits, s.misses, s.evictions);
  EXPECT_EQ(wrong.load(), 0) << "accesses inside begin that did not match the rights";
  EXPECT_EQ(wrong_outside.load(), 0) << "accesses to domains not open that succeeded";
  EXPECT_EQ(unrestored.load(), 0) << "end did not give the thread back its rights";
  errno = first_errno;
  EXPECT_EQ(errors.load(), 0) << "the first with " << pkeys_test::errno_str();
  EXPECT_GT(opened.load(), kThreads * kOpsPerThread / 2);
  EXPECT_EQ(s.pinned, 0u);
  ASSERT_EQ(::munmap(base, kDomains * page), 0) << pkeys_test::errno_str();
  for (int id : ids) EXPECT_EQ(pkeys_vkey_destroy(id), 0) << id << ": " << pkeys_test::errno_str();
}

// One thread opens and closes a vkey without a pause, holding it open a
// while each time, while another destroys it and creates a new one (which
// reuses the id). A begin that pins the vkey as it is destroyed must either
// lose (EINVAL) or make the destroy fail (EBUSY); it must never leave the
// vkey that reuses the id dead but counted, or pinned by nobody.
TEST(VKeysStress, DestroyRacingBeginLeavesEveryVKeyConsistent) {
  constexpr long kDestroys = 2000;
  constexpr unsigned kBase = PKEY_DISABLE_WRITE;
  pkeys_vkey_stats before{};
  ASSERT_EQ(pkeys_vkey_get_stats(&before), 0) << pkeys_test::errno_str();
  std::atomic<int> id{pkeys_vkey_create(kBase)};
  ASSERT_GT(id.load(), 0) << pkeys_test::errno_str();

  std::atomic<bool> stop{false};
  std::atomic<long> opened{0}, failed_ends{0}, odd_begins{0};
  std::atomic<int> odd_begin_errno{0};
  std::atomic<unsigned> sink{0};
  std::atomic<long> generation{0}, opened_generation{-1};  // the vkey now in `id`, and the last opened
  std::atomic<long> failures_in_a_row{0};
  long destroyed = 0, odd_destroys = 0;
  int odd_destroy_errno = 0;
  {
    // Held open long enough that a destroy and a create can happen in
    // between (then a lost pin's end lands on the new vkey); closed for
    // varying short whiles, so that a destroy that finds the vkey closed
    // races the next begin at every point of its way.
    pkeys_test::ScopedThread opener(
        [&] {
          for (unsigned n = 0; !stop.load(std::memory_order_relaxed); ++n) {
            const long gen = generation.load();  // then the id: that generation's or later
            const int v = id.load();
            if (pkeys_vkey_begin(v, 0) == 0) {
              ++opened;
              failures_in_a_row = 0;
              opened_generation = gen;
              for (int i = 0; i < 200; ++i) sink.fetch_add(1, std::memory_order_relaxed);
              if (pkeys_vkey_end(v) != 0) ++failed_ends;
              for (unsigned i = 0; i < (n % 16) * 8; ++i) sink.fetch_add(1, std::memory_order_relaxed);
            } else if (errno != EINVAL) {  // EINVAL: destroyed meanwhile
              odd_begin_errno = errno;
              ++odd_begins;
            } else {
              ++failures_in_a_row;
            }
          }
        },
        [&] { stop = true; });
    // Each vkey is destroyed once the opener has it cached (it opened it),
    // so that its next begins pin it without the lock; or once its begins
    // keep failing (a corrupted vkey). The first unexpected failure ends it.
    while (destroyed < kDestroys) {
      while (opened_generation.load() != generation.load() && failures_in_a_row.load() < 1000)
        std::this_thread::yield();
      if (pkeys_vkey_destroy(id) == 0) {
        ++destroyed;
        const int fresh = pkeys_vkey_create(kBase);
        if (fresh <= 0) break;  // checked below: the id must be live
        id = fresh;
        ++generation;
      } else if (errno != EBUSY) {
        odd_destroy_errno = errno;
        ++odd_destroys;
        break;
      }
    }
  }
  std::printf("destroyed %ld, opened %ld\n", destroyed, opened.load());
  errno = odd_destroy_errno;
  EXPECT_EQ(odd_destroys, 0) << "destroy of a live vkey failed with " << pkeys_test::errno_str();
  errno = odd_begin_errno;
  EXPECT_EQ(odd_begins.load(), 0) << pkeys_test::errno_str();
  EXPECT_EQ(failed_ends.load(), 0);

  const int v = id;
  EXPECT_EQ(pkeys_vkey_get(v), static_cast<int>(kBase)) << v << ": " << pkeys_test::errno_str();
  EXPECT_EQ(pkeys_vkey_begin(v, 0), 0) << v << ": " << pkeys_test::errno_str();
  EXPECT_EQ(pkeys_vkey_end(v), 0) << v << ": " << pkeys_test::errno_str();
  EXPECT_EQ(pkeys_vkey_destroy(v), 0) << v << ": " << pkeys_test::errno_str();
  pkeys_vkey_stats after{};
  ASSERT_EQ(pkeys_vkey_get_stats(&after), 0) << pkeys_test::errno_str();
  EXPECT_EQ(after.live, before.live) << "a vkey no one can reach is still counted";
  EXPECT_EQ(after.pinned, 0u);
}

// Shrinking the cache claims idle vkeys while other threads open and close
// them without the lock. Each claimed slot must be given back once: a slot
// claimed twice gave its key back twice and left another slot holding a
// key the cache no longer counted (a number lost to pkey_alloc for good).
TEST(VKeysStress, CacheLimitChangesRacingBeginsLoseNoKey) {
  pkeys_vkey_stats st{};
  ASSERT_EQ(pkeys_vkey_get_stats(&st), 0) << pkeys_test::errno_str();
  if (st.capacity == 0) GTEST_SKIP() << "no vkey cache on this backend (it has no per-thread rights)";
  const int capacity = static_cast<int>(st.capacity);
  constexpr int kVKeys = 3, kRounds = 3000;
  const auto allocatable = [] {
    std::vector<int> keys;
    for (int k; (k = pkey_alloc(0, 0)) >= 0;) keys.push_back(k);
    for (int k : keys) pkey_free(k);
    return keys.size();
  };
  ASSERT_EQ(pkeys_vkey_set_cache_limit(0), 0) << pkeys_test::errno_str();
  const std::size_t free_keys = allocatable();
  ASSERT_EQ(pkeys_vkey_set_cache_limit(kVKeys), 0) << pkeys_test::errno_str();
  int ids[kVKeys];
  for (int& id : ids) ASSERT_GT(id = pkeys_vkey_create(0), 0) << pkeys_test::errno_str();

  std::atomic<bool> stop{false};
  std::atomic<long> odd{0};
  std::atomic<int> odd_errno{0};
  long shrinks = 0;
  {
    std::vector<pkeys_test::ScopedThread> threads;
    for (int t = 0; t < 2; ++t)
      threads.emplace_back(
          [&, t] {
            for (unsigned n = static_cast<unsigned>(t); !stop.load(std::memory_order_relaxed); ++n) {
              const int v = ids[n % kVKeys];
              if (pkeys_vkey_begin(v, 0) == 0) {
                if (pkeys_vkey_end(v) != 0) ++odd;
              } else if (errno != EBUSY) {  // EBUSY: the cache is 0 just now
                odd_errno = errno;
                ++odd;
              }
            }
          },
          [&] { stop = true; });
    for (int round = 0; round < kRounds; ++round) {
      if (pkeys_vkey_set_cache_limit(0) == 0) ++shrinks;
      ASSERT_EQ(pkeys_vkey_set_cache_limit(kVKeys), 0) << pkeys_test::errno_str();
    }
  }
  std::printf("%ld of %d shrinks succeeded\n", shrinks, kRounds);
  errno = odd_errno;
  EXPECT_EQ(odd.load(), 0) << pkeys_test::errno_str();
  ASSERT_EQ(pkeys_vkey_set_cache_limit(0), 0) << pkeys_test::errno_str();
  ASSERT_EQ(pkeys_vkey_get_stats(&st), 0) << pkeys_test::errno_str();
  EXPECT_EQ(st.hardware_keys, 0u);
  EXPECT_EQ(st.cached, 0u) << "a vkey still holds a key the cache gave back";
  EXPECT_EQ(allocatable(), free_keys) << "hardware keys lost";
  for (int id : ids) EXPECT_EQ(pkeys_vkey_destroy(id), 0) << pkeys_test::errno_str();
  EXPECT_EQ(pkeys_vkey_set_cache_limit(capacity), 0) << pkeys_test::errno_str();
}
