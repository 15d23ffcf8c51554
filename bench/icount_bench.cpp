// SPDX-License-Identifier: MIT
// pkeys_icount_bench: instructions per operation of pkeys' rights switches,
// virtual keys and cross-thread changes on the x86-pku backend, beside the
// raw instructions and system calls they are built from. It runs in the PKU
// lane's instruction-count mode (`scripts/pku-lane.sh --icount`: QEMU TCG,
// `-icount shift=0 -smp 1`), where the guest's clock counts instructions;
// see icount_measure.hpp for the method and the output format.
//
// Built twice from this file: statically against libpkeys.a (every row),
// and, with PKEYS_ICOUNT_PLT, dynamically against libpkeys.so, where only
// the C ABI's pkey_set and pkey_get rows run, through the PLT.
//
// Rows, in instructions per operation:
//   rdpkru+wrpkru             the raw pair, one key's bit flipped: the floor
//   key::set                  inline pkeys::key::set, every call a change
//   scoped_rights             a pkeys::scoped_rights entered and left
//   libpkeys.a:pkey_set/_get  the C ABI, linked statically; libpkeys.so:
//                             the same through the PLT (glibc: the same
//                             from glibc alone, in pkeys_icount_glibc)
//   vkey_begin+end:cached     begin and end of one cached vkey
//   vkey_begin+end:miss       begin and end of 32 vkeys in turn over an
//                             8-key cache: every begin misses
//   mprotect_toggle(2_calls)  one populated page to PROT_NONE and back,
//                             the raw system calls; the miss is also given
//                             as a ratio of these toggles
//   pkey_set_all:0_threads    no other thread; ,unchanged: the same target
//                             every call
//   pkey_set_all:3_parked,need_it    3 threads parked in a condition
//                             variable wait, whose rights change every call;
//                             ,unchanged: already the target's
//   pkeys_sync_threads:...    the bare handshake, alike
//   ...:per_parked_thread,... (3_parked - 0_threads) / 3
//   ...,SCHED_FIFO            the cross-thread rows again, every thread
//                             under SCHED_FIFO (see kParkedPlan)
//   signal_floor:...          no pkeys: a bare handler that only acknowledges
//                             (tgkill, then a futex wait for the last one):
//                             the least any signal-based change can cost
//
// Natively there is no PKU here: without PKEYS_CAP_HARDWARE it says so and
// exits 77. Uses the public API only.
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#ifndef PKEYS_ICOUNT_PLT
#define PKEYS_ICOUNT_PLT 0
#endif
#if PKEYS_ICOUNT_PLT
#include <dlfcn.h>
#endif

#include "icount_measure.hpp"
#include "pkeys/pkeys.h"
#include "pkeys/pkeys.hpp"
#include "pkeys/pkru.h"

namespace {

using icount::print_error;
using icount::print_info;
using icount::print_ratio;
using icount::row;

// pkey_set and pkey_get must be libpkeys' (not glibc's): libpkeys refuses a
// key that is not allocated, glibc reads any key's bits. Key 15 is not
// allocated yet when this runs. Through the PLT: the file it comes from.
void say_whose_pkey_get(const char* name) {
  errno = 0;
  const bool ours = pkey_get(15) < 0 && errno == EINVAL;
#if PKEYS_ICOUNT_PLT
  Dl_info info{};
  if (ours && ::dladdr(reinterpret_cast<void*>(&pkey_get), &info) != 0 && info.dli_fname) {
    print_info(name, info.dli_fname);
    return;
  }
#endif
  print_info(name, ours ? "libpkeys" : "NOT-libpkeys(glibc?)");
}

// The C ABI's pkey_set (a call sets a key's rights and sets them back: two
// operations) and pkey_get.
void c_abi_rows(const char* set_name, const char* get_name, int key) {
  row(set_name, [key] { return pkey_set(key, PKEY_DISABLE_ACCESS) | pkey_set(key, 0); },
      {.per_call = 2});
  row(get_name, [key] { return pkey_get(key) < 0 ? -1 : 0; });
}

#if !PKEYS_ICOUNT_PLT

const std::size_t kPage = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));

// Private anonymous pages, each written once (mprotect costs more on
// populated pages, and a program's data is populated) and each its own
// mapping, with unmapped pages between them: no mprotect of one ever
// merges it with a neighbour or splits it off one, which would make a
// page's cost depend on what its neighbours went through.
std::vector<void*> isolated_pages(int count) {
  const std::size_t span = (2 * static_cast<std::size_t>(count) + 1) * kPage;
  auto* base = static_cast<char*>(
      ::mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (base == MAP_FAILED) return {};
  std::vector<void*> pages;
  for (int i = 0; i <= 2 * count; ++i) {
    char* page = base + static_cast<std::size_t>(i) * kPage;
    if (i % 2 == 0) {
      ::munmap(page, kPage);
    } else {
      std::memset(page, 1, kPage);
      pages.push_back(page);
    }
  }
  return pages;
}

// The system call itself: libpkeys interposes mprotect.
int raw_mprotect(void* p, std::size_t len, int prot) {
  return static_cast<int>(::syscall(SYS_mprotect, p, len, prot));
}

// The thread ids of the parked threads of the latest ParkedThreads.
std::vector<pid_t> g_parked_tids;

// `count` threads blocked in a condition variable wait until destroyed.
class ParkedThreads {
 public:
  explicit ParkedThreads(int count) {
    g_parked_tids.clear();
    for (int i = 0; i < count; ++i) {
      threads_.emplace_back([this] {
        std::unique_lock lock(mutex_);
        g_parked_tids.push_back(static_cast<pid_t>(::syscall(SYS_gettid)));
        ++parked_;
        parked_cv_.notify_one();
        stop_cv_.wait(lock, [this] { return stop_; });
      });
    }
    // Each one holds the mutex from its count until its wait releases it:
    // once all have counted, all wait.
    std::unique_lock lock(mutex_);
    parked_cv_.wait(lock, [&] { return parked_ == count; });
  }
  ~ParkedThreads() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    stop_cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  ParkedThreads(const ParkedThreads&) = delete;
  ParkedThreads& operator=(const ParkedThreads&) = delete;

 private:
  std::mutex mutex_;
  std::condition_variable parked_cv_, stop_cv_;
  int parked_ = 0;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

constexpr int kOtherThreads = 3;
// With other threads, how the default scheduler interleaves the handshake
// varies with its state, which lasts for many calls: each parked thread's
// acknowledgement costs thousands of instructions more when the caller it
// wakes preempts it at once, and a run's batches can all fall on costly
// interleavings. So these rows time single calls, many, in trials that
// each start fresh threads, and take the cheapest interleaving that
// recurs: the least figure that at least kRecurring calls come within
// 0.5% of. (The least alone is now and then a one-off, a percent or two
// below.) Under SCHED_FIFO there is only one interleaving.
constexpr int kTrials = 5;
constexpr icount::Plan kParkedPlan{.per_call = 1, .warmup = 4, .calls = 1, .batches = 100};
constexpr std::size_t kRecurring = 5;

double cheapest_recurring(std::vector<double> calls) {
  std::sort(calls.begin(), calls.end());
  for (std::size_t i = 0; i + kRecurring <= calls.size(); ++i)
    if (calls[i + kRecurring - 1] <= calls[i] * 1.005) return calls[i];
  return calls.front();  // nothing recurs: the least
}

// The scheduler the cross-thread rows run under: the default, and
// SCHED_FIFO (all threads at one priority), where a woken thread never
// preempts the running one: the handshake always interleaves the same
// way, so those rows compare code, not scheduler states.
struct Policy {
  const char* suffix;  // of the row names
  int policy;
};

std::string named(const char* base, const Policy& p) { return std::string(base) + p.suffix; }

// Sets the calling thread's policy; the threads it starts inherit it.
bool use_policy(const Policy& p) {
  sched_param param{};
  param.sched_priority = p.policy == SCHED_FIFO ? 1 : 0;
  return ::sched_setscheduler(0, p.policy, &param) == 0;
}

// `op` with kOtherThreads parked threads, in kTrials trials (`prepare`
// runs first in each): the cheapest recurring figure, printed.
template <class Prepare, class Op>
std::optional<double> parked_row(const std::string& name, Prepare prepare, Op op) {
  std::vector<double> calls;  // instructions of each timed call, every trial's
  for (int t = 0; t < kTrials; ++t) {
    ParkedThreads parked(kOtherThreads);
    if (prepare() != 0) {
      print_error(name.c_str(), errno);
      return std::nullopt;
    }
    const std::string trial = name + "#" + std::to_string(t + 1);
    const auto m = icount::checked(trial.c_str(), op, kParkedPlan);
    if (!m) return std::nullopt;
    for (auto ns : m->full.ns)
      calls.push_back(static_cast<double>(ns - m->empty.min()) / static_cast<double>(m->calls));
  }
  const double figure = cheapest_recurring(std::move(calls));
  icount::print_row(name.c_str(), figure);
  return figure;
}

// Total and per extra thread (minus the figure without other threads).
void per_thread_row(const std::string& name, std::optional<double> alone,
                    std::optional<double> total) {
  if (!alone || !total) {
    std::printf("ICOUNT %s error no figure: a row it derives from failed\n", name.c_str());
    return;
  }
  icount::print_row(name.c_str(), (*total - *alone) / kOtherThreads);
}

// The cross-thread operations on one key.
struct CrossThreadOps {
  int key;
  unsigned target = 0;
  // Alternating targets: every thread's rights differ from each new one.
  auto alternating() {
    return [this] {
      target ^= PKEY_DISABLE_ACCESS;
      return pkey_set_all(key, target);
    };
  }
  // The same target every time: no thread's rights change.
  auto same() const {
    return [k = key] { return pkey_set_all(k, 0); };
  }
  static auto sync() {
    return [] { return pkeys_sync_threads(); };
  }
};

// The signal floor: what a change costs that does nothing but deliver a
// signal to each thread and wait for the last handler, without pkeys.
std::atomic<int> g_floor_left{0};
const int kFloorSignal = SIGRTMIN + 1;

void floor_handler(int) {
  if (g_floor_left.fetch_sub(1, std::memory_order_acq_rel) == 1)
    ::syscall(SYS_futex, &g_floor_left, FUTEX_WAKE_PRIVATE, 1);
}

int signal_floor() {
  g_floor_left.store(static_cast<int>(g_parked_tids.size()), std::memory_order_release);
  for (pid_t tid : g_parked_tids) ::syscall(SYS_tgkill, ::getpid(), tid, kFloorSignal);
  for (int left; (left = g_floor_left.load(std::memory_order_acquire)) > 0;)
    ::syscall(SYS_futex, &g_floor_left, FUTEX_WAIT_PRIVATE, left, nullptr);
  return 0;
}

struct Alone {
  std::optional<double> need, same, sync, floor;
};

Alone alone_rows(CrossThreadOps& ops, const Policy& policy) {
  g_parked_tids.clear();
  return {row(named("pkey_set_all:0_threads", policy).c_str(), ops.alternating()),
          row(named("pkey_set_all:0_threads,unchanged", policy).c_str(), ops.same()),
          row(named("pkeys_sync_threads:0_threads", policy).c_str(), CrossThreadOps::sync()),
          row(named("signal_floor:0_threads", policy).c_str(), signal_floor)};
}

void parked_rows(CrossThreadOps& ops, const Policy& policy, const Alone& alone) {
  auto nothing = [] { return 0; };
  const auto need =
      parked_row(named("pkey_set_all:3_parked,need_it", policy), nothing, ops.alternating());
  per_thread_row(named("pkey_set_all:per_parked_thread,need_it", policy), alone.need, need);
  // Every thread's rights set to the target first.
  const auto same =
      parked_row(named("pkey_set_all:3_parked,unchanged", policy), ops.same(), ops.same());
  per_thread_row(named("pkey_set_all:per_parked_thread,unchanged", policy), alone.same, same);
  const auto synced =
      parked_row(named("pkeys_sync_threads:3_parked", policy), nothing, CrossThreadOps::sync());
  per_thread_row(named("pkeys_sync_threads:per_parked_thread", policy), alone.sync, synced);
  const auto floor = parked_row(named("signal_floor:3_parked", policy), nothing, signal_floor);
  per_thread_row(named("signal_floor:per_parked_thread", policy), alone.floor, floor);
}

// Every figure without other threads first, under both policies: once
// threads have come and gone, those figures vary from boot to boot by a
// percent or two.
void cross_thread_rows(int key) {
  struct sigaction sa {};
  sa.sa_handler = floor_handler;
  sa.sa_flags = SA_RESTART;
  ::sigaction(kFloorSignal, &sa, nullptr);
  const Policy policies[] = {{"", SCHED_OTHER}, {",SCHED_FIFO", SCHED_FIFO}};
  CrossThreadOps ops{key};
  Alone alone[2];
  for (int i = 0; i < 2; ++i) {
    if (!use_policy(policies[i])) {
      print_error(named("pkey_set_all:0_threads", policies[i]).c_str(), errno);
      continue;
    }
    alone[i] = alone_rows(ops, policies[i]);
  }
  for (int i = 0; i < 2; ++i) {
    if (!use_policy(policies[i])) {
      print_error(named("pkey_set_all:3_parked,need_it", policies[i]).c_str(), errno);
      continue;
    }
    parked_rows(ops, policies[i], alone[i]);
  }
  (void)use_policy(policies[0]);
}

void vkey_rows() {
  constexpr int kVkeys = 32, kCache = 8;
  const std::vector<void*> pages = isolated_pages(kVkeys + 2);
  if (pages.empty()) {
    print_error("vkey_begin+end:cached", errno);
    return;
  }

  // One vkey, cached by a first begin: begin and end are register writes.
  const int cached = pkeys_vkey_create(PKEY_DISABLE_ACCESS);
  if (cached < 0 || pkeys_vkey_mprotect(pages[0], kPage, PROT_READ | PROT_WRITE, cached) != 0) {
    print_error("vkey_begin+end:cached", errno);
  } else {
    row("vkey_begin+end:cached",
        [cached] { return pkeys_vkey_begin(cached, 0) | pkeys_vkey_end(cached); });
  }

  // 32 vkeys in turn over an 8-key cache: every begin evicts the least
  // recently used vkey (its page retagged to key 0, protected by mprotect)
  // and loads the next (its page retagged with the freed key). One call
  // is a round over all 32, so that every batch holds each vkey alike.
  std::optional<double> miss;
  int vkeys[kVkeys];
  bool ready = pkeys_vkey_set_cache_limit(kCache) == 0;
  for (int i = 0; ready && i < kVkeys; ++i) {
    vkeys[i] = pkeys_vkey_create(PKEY_DISABLE_ACCESS);
    ready = vkeys[i] >= 0 &&
            pkeys_vkey_mprotect(pages[1 + i], kPage, PROT_READ | PROT_WRITE, vkeys[i]) == 0;
  }
  if (!ready) {
    print_error("vkey_begin+end:miss", errno);
  } else {
    miss = row("vkey_begin+end:miss",
               [&vkeys] {
                 int failed = 0;
                 for (int v : vkeys) failed |= pkeys_vkey_begin(v, 0) | pkeys_vkey_end(v);
                 return failed;
               },
               {.per_call = kVkeys, .warmup = 2});
  }

  // The raw system calls a miss is compared with: one populated page made
  // inaccessible and accessible again (two mprotect calls: one toggle).
  void* p = pages[kVkeys + 1];
  const auto toggle = row("mprotect_toggle(2_calls)", [p] {
    return raw_mprotect(p, kPage, PROT_NONE) | raw_mprotect(p, kPage, PROT_READ | PROT_WRITE);
  });
  if (miss && toggle && *toggle > 0)
    print_ratio("vkey_miss_in_mprotect_toggles", *miss / *toggle);
}

void inline_rows(int raw_key) {
  // RDPKRU, then WRPKRU with one key's access bit flipped.
  const std::uint32_t mask = 1u << PKEYS_PKRU_SHIFT(raw_key);
  row("rdpkru+wrpkru", [mask] {
    pkeys_wrpkru(pkeys_rdpkru() ^ mask);
    return 0;
  });

  auto key = pkeys::key::allocate(pkeys::rights::no_access());
  if (!key) {
    print_error("key::set", key.error().value());
    print_error("scoped_rights", key.error().value());
    return;
  }
  // Each set changes the rights (an unchanged value writes nothing).
  row("key::set", [&key] {
    (void)key->set(pkeys::rights::read_write());
    (void)key->set(pkeys::rights::no_access());
    return 0;
  }, {.per_call = 2});
  // Inlined into the timed loop like key::set's, so that the row counts the
  // scope and not a call to the lambda.
  row("scoped_rights", [&key]() __attribute__((always_inline)) {
    pkeys::scoped_rights open(*key, pkeys::rights::read_write());
    __asm__ volatile("" ::: "memory");
    return open.error() ? -1 : 0;
  });
}

#endif  // !PKEYS_ICOUNT_PLT

}  // namespace

int main() {
  // The row and note names say which linkage measured them.
  const std::string linkage = PKEYS_ICOUNT_PLT ? "libpkeys.so" : "libpkeys.a";
  if ((pkeys_capabilities() & PKEYS_CAP_HARDWARE) == 0) {
    std::printf("%s: needs x86 PKU (backend here: %s); nothing measured\n",
                PKEYS_ICOUNT_PLT ? "pkeys_icount_plt" : "pkeys_icount_bench", pkeys_backend());
    return 77;
  }
  print_info((linkage + ":backend").c_str(), pkeys_backend());
  print_info((linkage + ":version").c_str(), pkeys_version());
  say_whose_pkey_get((linkage + ":pkey_get_is").c_str());
  icount::print_clock_pair((linkage + ":clock_pair").c_str());

  const std::string set_name = linkage + ":pkey_set", get_name = linkage + ":pkey_get";
  const int key = pkey_alloc(0, 0);
  if (key < 0) {
    print_error(set_name.c_str(), errno);
    return 1;
  }
#if !PKEYS_ICOUNT_PLT
  inline_rows(key);
#endif
  c_abi_rows(set_name.c_str(), get_name.c_str(), key);
#if !PKEYS_ICOUNT_PLT
  vkey_rows();
  cross_thread_rows(key);
#endif
  return 0;
}
