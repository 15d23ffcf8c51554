// SPDX-License-Identifier: MIT
// pkeys_bench: the cost of one rights switch (set, then set back), against
// a raw mprotect toggle of one page and, on PKU hardware, a raw
// RDPKRU/WRPKRU pair (the floor). Each case reports its time per
// iteration and its ratio to those baselines (x_mprotect, x_wrpkru),
// measured in the same process.
//
// Cases that need the other backend skip with a message: run once as is
// and once with PKEYS_BACKEND=emulated on a PKU machine.
#include <benchmark/benchmark.h>
#include <dlfcn.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <thread>
#include <string>
#include <vector>

#include "pkeys/pkeys.hpp"

namespace {

using Clock = std::chrono::steady_clock;

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

// Mean ns per call of `f` over about 0.3 s, as the benchmarks measure.
template <class F>
double calibrate(F&& f) {
  long n = 0;
  const auto t0 = Clock::now();
  auto elapsed = [&] { return std::chrono::duration<double, std::nano>(Clock::now() - t0).count(); };
  do {
    for (int i = 0; i < 1000; ++i) f();
    n += 1000;
  } while (elapsed() < 3e8);
  return elapsed() / static_cast<double>(n);
}

double g_mprotect_ns = 0;  // one page: PROT_NONE then PROT_READ|PROT_WRITE
double g_wrpkru_ns = 0;    // two WRPKRUs (RDPKRU once before the loop)

// Runs the timed loop and reports ratios to the baselines; returns the
// mean ns per iteration.
template <class F>
double run(benchmark::State& state, F&& body) {
  const auto t0 = Clock::now();
  for (auto _ : state) body();
  const double ns = std::chrono::duration<double, std::nano>(Clock::now() - t0).count() /
                    static_cast<double>(state.iterations());
  if (g_mprotect_ns > 0) state.counters["x_mprotect"] = ns / g_mprotect_ns;
  if (g_wrpkru_ns > 0) state.counters["x_wrpkru"] = ns / g_wrpkru_ns;
  return ns;
}

// A raw mprotect toggle of one range of `pages` pages (the baseline is 1).
void BM_RawMprotectToggle(benchmark::State& state) {
  const std::size_t len = static_cast<std::size_t>(state.range(0)) * kPage;
  void* p = map(len);
  std::memset(p, 1, len);  // populated, as a program's data would be
  run(state, [&] {
    raw_mprotect(p, len, PROT_NONE);
    raw_mprotect(p, len, PROT_READ | PROT_WRITE);
  });
  ::munmap(p, len);
}
BENCHMARK(BM_RawMprotectToggle)->ArgName("pages")->Arg(1)->Arg(16)->Arg(256)->Arg(4096);

// The same work as the emulated 64-range case, done with mprotect alone.
void BM_RawMprotectToggle64Ranges(benchmark::State& state) {
  constexpr std::size_t kRanges = 64;
  auto* base = static_cast<char*>(map(2 * kRanges * kPage));
  run(state, [&] {
    for (std::size_t i = 0; i < kRanges; ++i) raw_mprotect(base + 2 * i * kPage, kPage, PROT_NONE);
    for (std::size_t i = 0; i < kRanges; ++i) raw_mprotect(base + 2 * i * kPage, kPage, PROT_READ | PROT_WRITE);
  });
  ::munmap(base, 2 * kRanges * kPage);
}
BENCHMARK(BM_RawMprotectToggle64Ranges);

void BM_RawWrpkruPair(benchmark::State& state) {
  if (!hardware()) return state.SkipWithError("needs the x86-pku backend (no PKU here)");
  const std::uint32_t open = pkeys_rdpkru();
  const std::uint32_t closed = open | (1u << 2);  // key 1: access disabled
  run(state, [&] { raw_pkru_pair(closed, open); });
}
BENCHMARK(BM_RawWrpkruPair);

// Emulated backend: one range of `pages` pages, or `ranges` one-page
// ranges with gaps between them, all on one key.
void BM_EmulatedSwitch(benchmark::State& state) {
  if (hardware()) return state.SkipWithError("needs PKEYS_BACKEND=emulated");
  const auto pages = static_cast<std::size_t>(state.range(0));
  const auto ranges = static_cast<std::size_t>(state.range(1));
  auto key = pkeys::key::allocate();
  if (!key) return state.SkipWithError("pkey_alloc failed");
  const std::size_t span = ranges == 1 ? pages * kPage : 2 * ranges * kPage;
  auto* base = static_cast<char*>(map(span));
  std::memset(base, 1, span);
  if (ranges == 1)
    key->protect(base, span, PROT_READ | PROT_WRITE);
  else
    for (std::size_t i = 0; i < ranges; ++i) key->protect(base + 2 * i * kPage, kPage, PROT_READ | PROT_WRITE);
  run(state, [&] {
    pkey_set(key->id(), PKEY_DISABLE_ACCESS);
    pkey_set(key->id(), 0);
  });
  state.SetLabel(std::to_string(ranges) + " range(s), " + std::to_string(ranges == 1 ? pages : ranges) +
                 " page(s)");
  ::munmap(base, span);
}
BENCHMARK(BM_EmulatedSwitch)
    ->Args({1, 1})->Args({16, 1})->Args({256, 1})->Args({4096, 1})->Args({1, 64})
    ->ArgNames({"pages", "ranges"});

// The inline hardware switch on a key tagging `pages` pages: the cost does
// not depend on the size.
void BM_PkuSwitchBySize(benchmark::State& state) {
  if (!hardware()) return state.SkipWithError("needs the x86-pku backend (no PKU here)");
  const std::size_t len = static_cast<std::size_t>(state.range(0)) * kPage;
  auto key = pkeys::key::allocate();
  auto region = pkeys::region::map(len, PROT_READ | PROT_WRITE, *key);
  std::memset(region->data(), 1, len);
  run(state, [&] {
    (void)key->set(pkeys::rights::no_access());
    (void)key->set(pkeys::rights::read_write());
  });
}
BENCHMARK(BM_PkuSwitchBySize)->ArgName("pages")->Arg(1)->Arg(16)->Arg(256)->Arg(4096);

void BM_PkuCAbi(benchmark::State& state) {
  if (!hardware()) return state.SkipWithError("needs the x86-pku backend (no PKU here)");
  auto key = pkeys::key::allocate();
  run(state, [&] {
    pkey_set(key->id(), PKEY_DISABLE_ACCESS);
    pkey_set(key->id(), 0);
  });
}
BENCHMARK(BM_PkuCAbi);

void BM_PkuInlineCxx(benchmark::State& state) {
  if (!hardware()) return state.SkipWithError("needs the x86-pku backend (no PKU here)");
  auto key = pkeys::key::allocate();
  run(state, [&] {
    (void)key->set(pkeys::rights::no_access());
    (void)key->set(pkeys::rights::read_write());
  });
}
BENCHMARK(BM_PkuInlineCxx);

void BM_PkuGlibcPkeySet(benchmark::State& state) {
  if (!hardware()) return state.SkipWithError("needs the x86-pku backend (no PKU here)");
  void* libc = ::dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
  using PkeySet = int (*)(int, unsigned);
  auto glibc_pkey_set = libc ? reinterpret_cast<PkeySet>(::dlsym(libc, "pkey_set")) : nullptr;
  if (!glibc_pkey_set) return state.SkipWithError("glibc has no pkey_set (glibc < 2.27)");
  auto key = pkeys::key::allocate();
  run(state, [&] {
    glibc_pkey_set(key->id(), PKEY_DISABLE_ACCESS);
    glibc_pkey_set(key->id(), 0);
  });
}
BENCHMARK(BM_PkuGlibcPkeySet);

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

// The signal handshake alone (what pkey_set_all waits for on the hardware):
// every other thread runs pkeys' handler and acknowledges. Works without PKU.
void BM_SyncThreadsRoundTrip(benchmark::State& state) {
  ParkedThreads parked(static_cast<int>(state.range(0)));
  run(state, [&] {
    if (pkeys_sync_threads() != 0) state.SkipWithError("a thread did not answer");
  });
  state.SetLabel(std::to_string(state.range(0)) + " other thread(s)");
}
BENCHMARK(BM_SyncThreadsRoundTrip)->ArgName("threads")->Arg(1)->Arg(2)->Arg(8)->Arg(32)->Arg(128)->UseRealTime();

// pkey_set_all on one key, tagged on one page (process-wide mprotect on the
// emulation, the handshake on the hardware).
void BM_SetAll(benchmark::State& state) {
  ParkedThreads parked(static_cast<int>(state.range(0)) - 1);
  auto key = pkeys::key::allocate();
  void* page = map(kPage);
  key->protect(page, kPage, PROT_READ | PROT_WRITE);
  unsigned rights = 0;
  run(state, [&] {
    rights ^= PKEY_DISABLE_WRITE;
    if (pkey_set_all(key->id(), rights) != 0) state.SkipWithError("pkey_set_all failed");
  });
  ::munmap(page, kPage);
  state.SetLabel(std::to_string(state.range(0)) + " thread(s) in all, " + pkeys_backend());
}
BENCHMARK(BM_SetAll)->ArgName("threads")->Arg(1)->Arg(2)->Arg(8)->Arg(32)->Arg(128)->UseRealTime();

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
  run(state, [&] {
    rights ^= PKEY_DISABLE_WRITE;
    if (pkey_set_thread(tid, key->id(), rights) != 0) state.SkipWithError("pkey_set_thread failed");
  });
  {
    std::lock_guard lock(mu);
    stop = true;
  }
  cv.notify_all();
  target.join();
  state.SetLabel(pkeys_backend());
}
BENCHMARK(BM_SetThread)->UseRealTime();

// --- virtual keys -----------------------------------------------------------

double g_cabi_ns = 0;  // pkey_set pair through the C ABI (hardware only)

// begin/end on a vkey that holds a hardware key: two register writes.
void BM_VKeyBeginEndCached(benchmark::State& state) {
  void* page = map(kPage);
  const int v = pkeys_vkey_create(PKEY_DISABLE_ACCESS);
  pkeys_vkey_mprotect(page, kPage, PROT_READ | PROT_WRITE, v);
  pkeys_vkey_begin(v, 0);  // load it into the cache
  pkeys_vkey_end(v);
  const double ns = run(state, [&] {
    pkeys_vkey_begin(v, 0);
    pkeys_vkey_end(v);
  });
  if (g_cabi_ns > 0) state.counters["x_pkey_set"] = ns / g_cabi_ns;
  ::munmap(page, kPage);
  pkeys_vkey_destroy(v);
  state.SetLabel(hardware() ? "cached" : "emulated: mprotect per begin and end");
}
BENCHMARK(BM_VKeyBeginEndCached);

// begin on an evicted vkey: eviction of another (retagging its ranges) plus
// loading this one (retagging its ranges), with a cache of one key.
void BM_VKeyBeginEvicted(benchmark::State& state) {
  if (!hardware()) return state.SkipWithError("needs the x86-pku backend (the emulation has no cache)");
  const auto ranges = static_cast<std::size_t>(state.range(0));
  pkeys_vkey_set_cache_limit(1);
  auto* base = static_cast<char*>(map(4 * ranges * kPage));
  const int a = pkeys_vkey_create(PKEY_DISABLE_ACCESS), b = pkeys_vkey_create(PKEY_DISABLE_ACCESS);
  for (std::size_t i = 0; i < ranges; ++i) {
    pkeys_vkey_mprotect(base + 4 * i * kPage, kPage, PROT_READ | PROT_WRITE, a);
    pkeys_vkey_mprotect(base + (4 * i + 2) * kPage, kPage, PROT_READ | PROT_WRITE, b);
  }
  run(state, [&] {  // two misses an iteration
    pkeys_vkey_begin(a, 0);
    pkeys_vkey_end(a);
    pkeys_vkey_begin(b, 0);
    pkeys_vkey_end(b);
  });
  ::munmap(base, 4 * ranges * kPage);
  pkeys_vkey_destroy(a);
  pkeys_vkey_destroy(b);
  pkeys_vkey_set_cache_limit(8);
  state.SetLabel("2 misses per iteration, " + std::to_string(ranges) + " range(s) per vkey");
}
BENCHMARK(BM_VKeyBeginEvicted)->ArgName("ranges")->Arg(1)->Arg(16)->Arg(64);

// Random domain switches (open, write one byte, close) over N one-page
// domains, and the same work with mprotect alone; reports both and the
// speed-up.
void BM_VKeyRandomSwitch(benchmark::State& state) {
  const auto domains = static_cast<std::size_t>(state.range(0));
  auto* base = static_cast<char*>(::mmap(nullptr, domains * kPage, PROT_NONE,
                                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
  std::vector<int> ids(domains);
  for (std::size_t i = 0; i < domains; ++i) {
    ids[i] = pkeys_vkey_create(PKEY_DISABLE_ACCESS);
    pkeys_vkey_mprotect(base + i * kPage, kPage, PROT_READ | PROT_WRITE, ids[i]);
  }
  std::vector<std::uint32_t> order(1 << 16);
  std::uint32_t x = 2463534242u;
  for (auto& o : order) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    o = x % domains;
  }
  std::size_t next = 0;
  const double vkey_ns = run(state, [&] {
    const std::uint32_t i = order[next++ & (order.size() - 1)];
    pkeys_vkey_begin(ids[i], 0);
    base[i * kPage] = 1;
    pkeys_vkey_end(ids[i]);
  });
  // The same switches with mprotect alone, on pages of their own.
  auto* plain = static_cast<char*>(::mmap(nullptr, domains * kPage, PROT_NONE,
                                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
  std::size_t k = 0;
  const double mprotect_ns = calibrate([&] {
    const std::uint32_t i = order[k++ & (order.size() - 1)];
    raw_mprotect(plain + i * kPage, kPage, PROT_READ | PROT_WRITE);
    plain[i * kPage] = 1;
    raw_mprotect(plain + i * kPage, kPage, PROT_NONE);
  });
  state.counters["mprotect_ns"] = mprotect_ns;
  state.counters["speedup_vs_mprotect"] = mprotect_ns / vkey_ns;
  ::munmap(plain, domains * kPage);
  ::munmap(base, domains * kPage);
  for (int id : ids) pkeys_vkey_destroy(id);
  state.SetLabel(std::string(pkeys_backend()) + ", " + std::to_string(domains) + " domains");
}
BENCHMARK(BM_VKeyRandomSwitch)->ArgName("domains")->Arg(16)->Arg(64)->Arg(1024)->Arg(100000);

}  // namespace

int main(int argc, char** argv) {
  void* page = map(kPage);
  g_mprotect_ns = calibrate(
      [&] {
        raw_mprotect(page, kPage, PROT_NONE);
        raw_mprotect(page, kPage, PROT_READ | PROT_WRITE);
      });
  ::munmap(page, kPage);
  if (hardware()) {
    const std::uint32_t open = pkeys_rdpkru();
    g_wrpkru_ns = calibrate([&] { raw_pkru_pair(open | (1u << 2), open); });
    const int key = pkey_alloc(0, 0);
    g_cabi_ns = calibrate([&] {
      pkey_set(key, PKEY_DISABLE_ACCESS);
      pkey_set(key, 0);
    });
    pkey_free(key);
  }
  std::printf("pkeys_bench: backend %s; baselines: mprotect toggle %.1f ns", pkeys_backend(), g_mprotect_ns);
  if (g_wrpkru_ns > 0) std::printf(", WRPKRU pair %.1f ns", g_wrpkru_ns);
  std::printf("\n");
  benchmark::AddCustomContext("pkeys_backend", pkeys_backend());
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
