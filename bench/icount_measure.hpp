// SPDX-License-Identifier: MIT
// icount_measure.hpp - the measuring part of the instruction-count
// benchmarks (icount_bench.cpp, icount_glibc.cpp), which run in the PKU
// lane's `--icount` mode: QEMU TCG with `-icount shift=0 -smp 1`, where
// guest time advances one nanosecond per executed guest instruction, so a
// CLOCK_MONOTONIC delta read inside the guest is an instruction count (the
// kernel's instructions in system calls, context switches and signal
// delivery included). Natively these numbers are nanoseconds, not
// instructions; the programs refuse to run without PKU anyway.
//
// One measurement: a batch is N calls of an operation between two clock
// reads. The same loop around an empty operation (an empty batch) gives
// the cost of the clock pair and of the loop itself, which is subtracted.
// Both are the minimum of several batches: a timer tick (every 4 ms of
// guest time at HZ=250) lands in a few batches at most, and the minimum
// leaves those out. (Such a batch reads about 4 million more: under QEMU
// 7.2 -icount a tick costs about that much guest time, observed, not
// explained.) N is chosen so that a batch is about kTargetInstructions:
// long enough that the clock's own cost is small, short enough that most
// batches see no tick. A plan can fix N instead (icount_bench.cpp times
// single cross-thread calls). Without other threads the figures repeat
// exactly from boot to boot, or within a few instructions.
//
// Output, one line per row (scripts/pku-lane.sh --icount parses them):
//   ICOUNT <name> <instructions per operation>
//   ICOUNT <name> error <errno text>
//   ICOUNT-RATIO <name> <ratio>
//   ICOUNT-INFO <name> <text>
//   ICOUNT-BATCHES <name> calls=N empty: <ns>... full: <ns>...
// Names are single words. This header needs libc and the C++ standard
// library only: the glibc-only program uses it too.
#ifndef PKEYS_BENCH_ICOUNT_MEASURE_HPP
#define PKEYS_BENCH_ICOUNT_MEASURE_HPP

#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <vector>

namespace icount {

// About a quarter of a timer tick: one batch in four at most sees a tick.
constexpr std::int64_t kTargetInstructions = 1'000'000;
constexpr int kBatches = 15;
constexpr long kMaxCalls = 250'000;
constexpr long kMinCalls = 4;

inline std::int64_t now_ns() noexcept {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// The operation the empty batch repeats: nothing, but not optimized away.
struct Empty {
  void operator()() const noexcept { __asm__ volatile("" ::: "memory"); }
};

// N calls of `op` between two clock reads. Not inlined, so that every
// operation's loop (and the empty one) is compiled alike, on its own. `op`
// is a copy, local to the loop, so that what it captured by value stays in
// registers instead of being reloaded through a pointer on every call.
// (An operation that keeps state across calls captures it by reference.)
template <class Op>
[[gnu::noinline]] std::int64_t timed_batch(Op op, long calls) {
  const std::int64_t start = now_ns();
  for (long i = 0; i < calls; ++i) op();
  return now_ns() - start;
}

// Batches of the same number of calls.
struct Batches {
  std::vector<std::int64_t> ns;
  std::int64_t min() const { return *std::min_element(ns.begin(), ns.end()); }
};

template <class Op>
Batches batches(const Op& op, long calls, int count = kBatches) {
  Batches out;
  for (int b = 0; b < count; ++b) out.ns.push_back(timed_batch(op, calls));
  return out;
}

// One row's batches, the operation's and the empty ones.
struct Measurement {
  long calls;
  double per_call;
  Batches empty, full;
  // Instructions per operation: (best batch - best empty batch) / calls /
  // per_call (how many operations one call performs, e.g. 2 when it sets a
  // key's rights and sets them back).
  double per_op() const {
    return static_cast<double>(full.min() - empty.min()) / static_cast<double>(calls) / per_call;
  }
};

// How to measure: by default kBatches batches of about
// kTargetInstructions. `warmup` calls run first (lazy binding, first-touch
// page faults, a cache filling up).
struct Plan {
  double per_call = 1;
  long warmup = 16;
  long calls = 0;  // calls per batch; 0: sized by a calibration batch
  int batches = kBatches;
};

template <class Op>
Measurement measure(Op op, const Plan& plan) {
  for (long i = 0; i < plan.warmup; ++i) op();
  long calls = plan.calls;
  if (calls == 0) {
    const std::int64_t rough = std::max<std::int64_t>(
        1, timed_batch(op, kMinCalls) - timed_batch(Empty{}, kMinCalls));
    calls = static_cast<long>(std::clamp<std::int64_t>(kTargetInstructions * kMinCalls / rough,
                                                       kMinCalls, kMaxCalls));
  }
  Measurement m{calls, plan.per_call, batches(Empty{}, calls, plan.batches), {}};
  m.full = batches(op, calls, plan.batches);
  return m;
}

inline void print_row(const char* name, double value) {
  std::printf("ICOUNT %s %.1f\n", name, value);
  std::fflush(stdout);
}

inline void print_error(const char* name, int err) {
  std::printf("ICOUNT %s error %s\n", name, std::strerror(err));
  std::fflush(stdout);
}

inline void print_ratio(const char* name, double value) {
  std::printf("ICOUNT-RATIO %s %.2f\n", name, value);
  std::fflush(stdout);
}

inline void print_info(const char* name, const char* text) {
  std::printf("ICOUNT-INFO %s %s\n", name, text);
  std::fflush(stdout);
}

// Every batch, for a look at how they spread (the table leaves them out).
inline void print_batches(const char* name, const Measurement& m) {
  std::printf("ICOUNT-BATCHES %s calls=%ld empty:", name, m.calls);
  for (auto b : m.empty.ns) std::printf(" %lld", static_cast<long long>(b));
  std::printf(" full:");
  for (auto b : m.full.ns) std::printf(" %lld", static_cast<long long>(b));
  std::printf("\n");
  std::fflush(stdout);
}

// The clock pair's own cost (an empty batch of no calls), which every
// figure has subtracted.
inline void print_clock_pair(const char* name) {
  char text[32];
  std::snprintf(text, sizeof text, "%lld",
                static_cast<long long>(batches(Empty{}, 0).min()));
  print_info(name, text);
}

// Measures an operation that returns 0 on success and -1 with errno: `op`
// is called once checked before the measurement and once after (the
// timed loop ignores results, so that checking costs nothing there), and
// the batches are printed. On an error it prints the error row and returns
// nullopt.
template <class Op>
std::optional<Measurement> checked(const char* name, Op op, const Plan& plan = {}) {
  if (op() != 0) {
    print_error(name, errno);
    return std::nullopt;
  }
  const Measurement m = measure([op]() mutable { (void)op(); }, plan);
  if (op() != 0) {
    print_error(name, errno);
    return std::nullopt;
  }
  print_batches(name, m);
  return m;
}

// One measured row: its figure, printed and returned, or nullopt after an
// error row.
template <class Op>
std::optional<double> row(const char* name, Op op, const Plan& plan = {}) {
  const auto m = checked(name, op, plan);
  if (!m) return std::nullopt;
  print_row(name, m->per_op());
  return m->per_op();
}

}  // namespace icount

#endif  // PKEYS_BENCH_ICOUNT_MEASURE_HPP
