// SPDX-License-Identifier: MIT
// pkeys_bench: the cost of one rights switch (set, then set back) and of
// the cross-thread and virtual-key operations, beside the same work done
// with raw mprotect (BM_RawMprotect*: populated pages, the same sizes) and,
// on PKU hardware, a raw WRPKRU pair (the floor). Ratios are left to the
// reader or to `pkeyctl bench`, which divides medians of one run: a
// baseline measured like the cases it is compared with reads 1.00x.
//
// Each case announces itself on stderr as it starts. --quick (for smoke
// tests) drops the largest sizes and defaults to 3 short repetitions;
// Google Benchmark's own flags follow it and win.
//
// Cases that need the other backend skip with a message: run once as is
// and once with PKEYS_BACKEND=emulated on a PKU machine.
#include <benchmark/benchmark.h>
#include <dlfcn.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <string>
#include <vector>

#include "pkeys/pkeys.hpp"

namespace {

const std::size_t kPage = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));

bool hardware() { return (pkeys_capabilities() & PKEYS_CAP_HARDWARE) != 0; }

void* map(std::size_t bytes) {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) std::abort();
  return p;
}

// The raw system call, bypassing the library's bookkeeping.
inline void raw_mprotect(void* p, std::size_t len, int prot) {
  ::syscall(SYS_mprotect, p, len, prot);
}

inline void raw_pkru_pair(std::uint32_t a, std::uint32_t b) {
  pkeys_wrpkru(a);
  pkeys_wrpkru(b);
}

// Every page of [p, p + len) written once: a program's data is populated,
// and mprotect costs more on populated pages than on untouched ones, so
// cases and the baselines they are compared with populate alike.
void populate(void* p, std::size_t len) { std::memset(p, 1, len); }

// --- raw baselines ------------------------------------------------------------

// A raw mprotect toggle of one range of `pages` populated pages.
void BM_RawMprotectToggle(benchmark::State& state, std::size_t pages) {
  const std::size_t len = pages * kPage;
  void* p = map(len);
  populate(p, len);
  for (auto _ : state) {
    raw_mprotect(p, len, PROT_NONE);
    raw_mprotect(p, len, PROT_READ | PROT_WRITE);
  }
  ::munmap(p, len);
}

constexpr std::size_t kRanges = 64;

// The same work as the emulated 64-range case, done with mprotect alone.
void BM_RawMprotectToggle64Ranges(benchmark::State& state) {
  auto* base = static_cast<char*>(map(2 * kRanges * kPage));
  populate(base, 2 * kRanges * kPage);
  for (auto _ : state) {
    for (std::size_t i = 0; i < kRanges; ++i) raw_mprotect(base + 2 * i * kPage, kPage, PROT_NONE);
    for (std::size_t i = 0; i < kRanges; ++i) raw_mprotect(base + 2 * i * kPage, kPage, PROT_READ | PROT_WRITE);
  }
  ::munmap(base, 2 * kRanges * kPage);
}

void BM_RawWrpkruPair(benchmark::State& state) {
  if (!hardware()) return state.SkipWithError("needs the x86-pku backend (no PKU here)");
  const std::uint32_t open = pkeys_rdpkru();
  const std::uint32_t closed = open | (1u << 2);  // key 1: access disabled
  for (auto _ : state) raw_pkru_pair(closed, open);
}

// --- one key -----------------------------------------------------------------

// Emulated backend: one range of `pages` pages, or `ranges` one-page
// ranges with gaps between them, all on one key.
void BM_EmulatedSwitch(benchmark::State& state, std::size_t pages, std::size_t ranges) {
  if (hardware()) return state.SkipWithError("needs PKEYS_BACKEND=emulated");
  auto key = pkeys::key::allocate();
  if (!key) return state.SkipWithError("pkey_alloc failed");
  const std::size_t span = ranges == 1 ? pages * kPage : 2 * ranges * kPage;
  auto* base = static_cast<char*>(map(span));
  populate(base, span);
  if (ranges == 1)
    key->protect(base, span, PROT_READ | PROT_WRITE);
  else
    for (std::size_t i = 0; i < ranges; ++i) key->protect(base + 2 * i * kPage, kPage, PROT_READ | PROT_WRITE);
  for (auto _ : state) {
    pkey_set(key->id(), PKEY_DISABLE_ACCESS);
    pkey_set(key->id(), 0);
  }
  state.SetLabel(std::to_string(ranges) + " range(s), " + std::to_string(ranges == 1 ? pages : ranges) +
                 " page(s)");
  ::munmap(base, span);
}

// The inline hardware switch on a key tagging `pages` pages: the cost does
// not depend on the size.
void BM_PkuSwitchBySize(benchmark::State& state, std::size_t pages) {
  if (!hardware()) return state.SkipWithError("needs the x86-pku backend (no PKU here)");
  const std::size_t len = pages * kPage;
  auto key = pkeys::key::allocate();
  auto region = pkeys::region::map(len, PROT_READ | PROT_WRITE, *key);
  populate(region->data(), len);
  for (auto _ : state) {
    (void)key->set(pkeys::rights::no_access());
    (void)key->set(pkeys::rights::read_write());
  }
}

void BM_PkuCAbi(benchmark::State& state) {
  if (!hardware()) return state.SkipWithError("needs the x86-pku backend (no PKU here)");
  auto key = pkeys::key::allocate();
  for (auto _ : state) {
    pkey_set(key->id(), PKEY_DISABLE_ACCESS);
    pkey_set(key->id(), 0);
  }
}

void BM_PkuInlineCxx(benchmark::State& state) {
  if (!hardware()) return state.SkipWithError("needs the x86-pku backend (no PKU here)");
  auto key = pkeys::key::allocate();
  for (auto _ : state) {
    (void)key->set(pkeys::rights::no_access());
    (void)key->set(pkeys::rights::read_write());
  }
}

void BM_PkuGlibcPkeySet(benchmark::State& state) {
  if (!hardware()) return state.SkipWithError("needs the x86-pku backend (no PKU here)");
  void* libc = ::dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
  using PkeySet = int (*)(int, unsigned);
  auto glibc_pkey_set = libc ? reinterpret_cast<PkeySet>(::dlsym(libc, "pkey_set")) : nullptr;
  if (!glibc_pkey_set) return state.SkipWithError("glibc has no pkey_set (glibc < 2.27)");
  auto key = pkeys::key::allocate();
  for (auto _ : state) {
    glibc_pkey_set(key->id(), PKEY_DISABLE_ACCESS);
    glibc_pkey_set(key->id(), 0);
  }
}

// --- threads -----------------------------------------------------------------

// Threads parked in a condition variable wait, for the cross-thread cases.
class ParkedThreads {
 public:
  explicit ParkedThreads(int n) {
    for (int i = 0; i < n; ++i)
      threads_.emplace_back([this] {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [this] { return stop_; });
      });
  }
  ~ParkedThreads() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

// pkeys_sync_threads with parked threads that pkeys started: it knows their
// rights, so it signals none (the registry's check per thread and the
// kernel's thread count). The signal round trip itself is measured by
// instruction count in the PKU lane (scripts/pku-lane.sh --icount).
void BM_SyncThreadsRoundTrip(benchmark::State& state, int others) {
  ParkedThreads parked(others);
  for (auto _ : state)
    if (pkeys_sync_threads() != 0) state.SkipWithError("a thread did not answer");
  state.SetLabel(std::to_string(others) + " other thread(s)");
}

// pkey_set_all on one key, tagged on one populated page (process-wide
// mprotect on the emulation, the handshake on the hardware).
void BM_SetAll(benchmark::State& state, int threads) {
  ParkedThreads parked(threads - 1);
  auto key = pkeys::key::allocate();
  void* page = map(kPage);
  populate(page, kPage);
  key->protect(page, kPage, PROT_READ | PROT_WRITE);
  unsigned rights = 0;
  for (auto _ : state) {
    rights ^= PKEY_DISABLE_WRITE;
    if (pkey_set_all(key->id(), rights) != 0) state.SkipWithError("pkey_set_all failed");
  }
  ::munmap(page, kPage);
  state.SetLabel(std::to_string(threads) + " thread(s) in all, " + pkeys_backend());
}

// pkey_set_thread to one other thread.
void BM_SetThread(benchmark::State& state) {
  std::atomic<pid_t> tid{0};
  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  std::thread target([&] {
    tid = static_cast<pid_t>(::syscall(SYS_gettid));
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return stop; });
  });
  while (tid == 0) std::this_thread::yield();
  auto key = pkeys::key::allocate();
  unsigned rights = 0;
  for (auto _ : state) {
    rights ^= PKEY_DISABLE_WRITE;
    if (pkey_set_thread(tid, key->id(), rights) != 0) state.SkipWithError("pkey_set_thread failed");
  }
  {
    std::lock_guard lock(mu);
    stop = true;
  }
  cv.notify_all();
  target.join();
  state.SetLabel(pkeys_backend());
}

// --- virtual keys -----------------------------------------------------------

// begin/end on a vkey that holds a hardware key: two register writes.
void BM_VKeyBeginEndCached(benchmark::State& state) {
  void* page = map(kPage);
  populate(page, kPage);
  const int v = pkeys_vkey_create(PKEY_DISABLE_ACCESS);
  pkeys_vkey_mprotect(page, kPage, PROT_READ | PROT_WRITE, v);
  pkeys_vkey_begin(v, 0);  // load it into the cache
  pkeys_vkey_end(v);
  for (auto _ : state) {
    pkeys_vkey_begin(v, 0);
    pkeys_vkey_end(v);
  }
  ::munmap(page, kPage);
  pkeys_vkey_destroy(v);
  state.SetLabel(hardware() ? "cached" : "emulated: mprotect per begin and end");
}

// begin on an evicted vkey: eviction of another (retagging its ranges) plus
// loading this one (retagging its ranges), with a cache of one key.
void BM_VKeyBeginEvicted(benchmark::State& state, std::size_t ranges) {
  if (!hardware()) return state.SkipWithError("needs the x86-pku backend (the emulation has no cache)");
  pkeys_vkey_set_cache_limit(1);
  auto* base = static_cast<char*>(map(4 * ranges * kPage));
  populate(base, 4 * ranges * kPage);
  const int a = pkeys_vkey_create(PKEY_DISABLE_ACCESS), b = pkeys_vkey_create(PKEY_DISABLE_ACCESS);
  for (std::size_t i = 0; i < ranges; ++i) {
    pkeys_vkey_mprotect(base + 4 * i * kPage, kPage, PROT_READ | PROT_WRITE, a);
    pkeys_vkey_mprotect(base + (4 * i + 2) * kPage, kPage, PROT_READ | PROT_WRITE, b);
  }
  for (auto _ : state) {  // two misses an iteration
    pkeys_vkey_begin(a, 0);
    pkeys_vkey_end(a);
    pkeys_vkey_begin(b, 0);
    pkeys_vkey_end(b);
  }
  ::munmap(base, 4 * ranges * kPage);
  pkeys_vkey_destroy(a);
  pkeys_vkey_destroy(b);
  pkeys_vkey_set_cache_limit(8);
  state.SetLabel("2 misses per iteration, " + std::to_string(ranges) + " range(s) per vkey");
}

// The same pseudo-random order of domains for both random-switch cases.
std::vector<std::uint32_t> switch_order(std::size_t domains) {
  std::vector<std::uint32_t> order(1 << 16);
  std::uint32_t x = 2463534242u;
  for (auto& o : order) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    o = static_cast<std::uint32_t>(x % domains);
  }
  return order;
}

char* map_domains(std::size_t domains) {
  void* p = ::mmap(nullptr, domains * kPage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) std::abort();
  return static_cast<char*>(p);
}

// Random domain switches (open, write one byte, close) over N one-page
// domains with virtual keys.
void BM_VKeyRandomSwitch(benchmark::State& state, std::size_t domains) {
  char* base = map_domains(domains);
  std::vector<int> ids(domains);
  for (std::size_t i = 0; i < domains; ++i) {
    ids[i] = pkeys_vkey_create(PKEY_DISABLE_ACCESS);
    pkeys_vkey_mprotect(base + i * kPage, kPage, PROT_READ | PROT_WRITE, ids[i]);
  }
  const std::vector<std::uint32_t> order = switch_order(domains);
  std::size_t next = 0;
  for (auto _ : state) {
    const std::uint32_t i = order[next++ & (order.size() - 1)];
    pkeys_vkey_begin(ids[i], 0);
    base[i * kPage] = 1;
    pkeys_vkey_end(ids[i]);
  }
  ::munmap(base, domains * kPage);
  for (int id : ids) pkeys_vkey_destroy(id);
  state.SetLabel(std::string(pkeys_backend()) + ", " + std::to_string(domains) + " domains");
}

// The same switches with mprotect alone, on pages of their own.
void BM_RawMprotectRandomSwitch(benchmark::State& state, std::size_t domains) {
  char* base = map_domains(domains);
  const std::vector<std::uint32_t> order = switch_order(domains);
  std::size_t next = 0;
  for (auto _ : state) {
    const std::uint32_t i = order[next++ & (order.size() - 1)];
    raw_mprotect(base + i * kPage, kPage, PROT_READ | PROT_WRITE);
    base[i * kPage] = 1;
    raw_mprotect(base + i * kPage, kPage, PROT_NONE);
  }
  ::munmap(base, domains * kPage);
  state.SetLabel(std::to_string(domains) + " domains");
}

// --- registration ---------------------------------------------------------------

int g_cases = 0;
bool g_count_known = true;  // false under --benchmark_filter

// Prints `name` on stderr when it differs from the case announced last.
void announce(const std::string& name) {
  static std::string last;
  static int started = 0;
  if (name == last) return;
  last = name;
  ++started;
  if (g_count_known)
    std::fprintf(stderr, "pkeys_bench: [%d/%d] %s\n", started, g_cases, name.c_str());
  else
    std::fprintf(stderr, "pkeys_bench: %s\n", name.c_str());
}

// Registers `fn(state, args...)` as `name`. The library calls a case several
// times (while it sizes the iteration count, then once per repetition):
// each case is announced on stderr once, as it starts.
template <class... Params, class... Args>
benchmark::internal::Benchmark* add(const std::string& name, void (*fn)(benchmark::State&, Params...),
                                    Args... args) {
  ++g_cases;
  return benchmark::RegisterBenchmark(name.c_str(), [name, fn, args...](benchmark::State& state) {
    announce(name);
    fn(state, static_cast<Params>(args)...);
  });
}

void register_all(bool quick) {
  // --quick leaves out the largest sizes, which take the longest.
  const std::vector<std::size_t> sizes = quick ? std::vector<std::size_t>{1, 16, 256}
                                               : std::vector<std::size_t>{1, 16, 256, 4096};
  const std::vector<int> threads = quick ? std::vector<int>{1, 2, 8} : std::vector<int>{1, 2, 8, 32, 128};
  const std::vector<std::size_t> domains = quick ? std::vector<std::size_t>{16, 64, 1024}
                                                 : std::vector<std::size_t>{16, 64, 1024, 100000};
  const std::vector<std::size_t> evicted = quick ? std::vector<std::size_t>{1, 16}
                                                 : std::vector<std::size_t>{1, 16, 64};
  const auto n = [](auto v) { return std::to_string(v); };

  for (std::size_t p : sizes) add("BM_RawMprotectToggle/pages:" + n(p), BM_RawMprotectToggle, p);
  add("BM_RawMprotectToggle64Ranges", BM_RawMprotectToggle64Ranges);
  add("BM_RawWrpkruPair", BM_RawWrpkruPair);
  for (std::size_t p : sizes) add("BM_EmulatedSwitch/pages:" + n(p) + "/ranges:1", BM_EmulatedSwitch, p, std::size_t{1});
  add("BM_EmulatedSwitch/pages:1/ranges:" + n(kRanges), BM_EmulatedSwitch, std::size_t{1}, kRanges);
  for (std::size_t p : sizes) add("BM_PkuSwitchBySize/pages:" + n(p), BM_PkuSwitchBySize, p);
  add("BM_PkuCAbi", BM_PkuCAbi);
  add("BM_PkuInlineCxx", BM_PkuInlineCxx);
  add("BM_PkuGlibcPkeySet", BM_PkuGlibcPkeySet);
  for (int t : threads) add("BM_SyncThreadsRoundTrip/threads:" + n(t), BM_SyncThreadsRoundTrip, t)->UseRealTime();
  for (int t : threads) add("BM_SetAll/threads:" + n(t), BM_SetAll, t)->UseRealTime();
  add("BM_SetThread", BM_SetThread)->UseRealTime();
  add("BM_VKeyBeginEndCached", BM_VKeyBeginEndCached);
  for (std::size_t r : evicted) add("BM_VKeyBeginEvicted/ranges:" + n(r), BM_VKeyBeginEvicted, r);
  for (std::size_t d : domains) {
    add("BM_VKeyRandomSwitch/domains:" + n(d), BM_VKeyRandomSwitch, d);
    add("BM_RawMprotectRandomSwitch/domains:" + n(d), BM_RawMprotectRandomSwitch, d);
  }
}

}  // namespace

int main(int argc, char** argv) {
  // --quick is ours: take it out, and put its defaults before the caller's
  // flags (Google Benchmark lets a later flag override an earlier one).
  bool quick = false;
  std::vector<char*> args{argv[0]};
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
      continue;
    }
    if (std::strncmp(argv[i], "--benchmark_filter", 18) == 0) g_count_known = false;
    args.push_back(argv[i]);
  }
  static char min_time[] = "--benchmark_min_time=0.01", repetitions[] = "--benchmark_repetitions=3";
  if (quick) args.insert(args.begin() + 1, {min_time, repetitions});
  int n = static_cast<int>(args.size());
  args.push_back(nullptr);

  register_all(quick);
  std::fprintf(stderr, "pkeys_bench: backend %s%s\n", pkeys_backend(), quick ? ", --quick" : "");
  benchmark::AddCustomContext("pkeys_backend", pkeys_backend());
  benchmark::AddCustomContext("pkeys_bench_quick", quick ? "true" : "false");
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
