// SPDX-License-Identifier: MIT
#include "arch/x86_64/pkru_switches.hpp"

#include <ucontext.h>

#include <atomic>
#include <cstdint>

#include "pkeys/pkru.h"

// Defined here, declared in pkeys/pkru.h: every thread's copy of its PKRU.
__attribute__((visibility("default"))) __thread std::uint32_t pkeys_thread_pkru
    __attribute__((tls_model("initial-exec"))) = 0;

namespace pkeys::arch {
namespace {

// One recorded switch: offsets from the record itself, so the section
// needs no relocations.
struct SwitchRecord {
  std::int32_t start;         // the switch's first instruction, from &start
  std::uint32_t wrpkru_from_start;  // its WRPKRU, from the first instruction
};

// Registered modules: never freed (a handler may be reading one); an entry
// with refs == 0 is unused. Registration is rare (constructors), so it
// takes a simple spin lock; the handler reads without one.
struct Module {
  std::atomic<std::uintptr_t> begin{0};
  std::atomic<std::uintptr_t> end{0};
  std::atomic<int> refs{0};
};
constexpr int kMaxModules = 256;
Module g_modules[kMaxModules];
std::atomic<int> g_used{0};  // slots ever used: the handler looks at no more
std::atomic_flag g_registering = ATOMIC_FLAG_INIT;

class SpinGuard {
 public:
  SpinGuard() noexcept {
    while (g_registering.test_and_set(std::memory_order_acquire)) __builtin_ia32_pause();
  }
  ~SpinGuard() { g_registering.clear(std::memory_order_release); }
  SpinGuard(const SpinGuard&) = delete;
  SpinGuard& operator=(const SpinGuard&) = delete;
};

}  // namespace

bool restart_interrupted_switch(void* ucontext) noexcept {
  auto* uc = static_cast<ucontext_t*>(ucontext);
  const auto ip = static_cast<std::uintptr_t>(uc->uc_mcontext.gregs[REG_RIP]);
  const int used = g_used.load(std::memory_order_acquire);
  for (int i = 0; i < used; ++i) {
    const Module& m = g_modules[i];
    if (m.refs.load(std::memory_order_acquire) <= 0) continue;
    const std::uintptr_t begin = m.begin.load(std::memory_order_relaxed);
    const std::uintptr_t end = m.end.load(std::memory_order_relaxed);
    for (std::uintptr_t p = begin; p + sizeof(SwitchRecord) <= end; p += sizeof(SwitchRecord)) {
      const auto* r = reinterpret_cast<const SwitchRecord*>(p);
      const std::uintptr_t start = p + static_cast<std::uintptr_t>(static_cast<std::intptr_t>(r->start));
      if (ip >= start && ip <= start + r->wrpkru_from_start) {
        uc->uc_mcontext.gregs[REG_RIP] = static_cast<greg_t>(start);
        return true;
      }
    }
  }
  return false;
}

std::uint32_t* thread_pkru_copy() noexcept { return &pkeys_thread_pkru; }

}  // namespace pkeys::arch

using pkeys::arch::g_modules;
using pkeys::arch::g_used;
using pkeys::arch::kMaxModules;
using pkeys::arch::Module;

namespace {

// A registered module's slot, among those ever used; under the spin lock.
Module* registered_module(std::uintptr_t begin) noexcept {
  const int used = g_used.load(std::memory_order_relaxed);
  for (int i = 0; i < used; ++i)
    if (g_modules[i].refs.load(std::memory_order_relaxed) > 0 &&
        g_modules[i].begin.load(std::memory_order_relaxed) == begin)
      return &g_modules[i];
  return nullptr;
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) void pkeys_pkru_register_switches(const void* begin, const void* end) {
  if (!begin || !end || end <= begin) return;
  const auto b = reinterpret_cast<std::uintptr_t>(begin);
  pkeys::arch::SpinGuard guard;
  if (Module* m = registered_module(b)) {
    m->refs.fetch_add(1, std::memory_order_release);
    return;
  }
  // A slot given back, else the next never used.
  const int used = g_used.load(std::memory_order_relaxed);
  int slot = 0;
  while (slot < used && g_modules[slot].refs.load(std::memory_order_relaxed) > 0) ++slot;
  if (slot == kMaxModules) return;  // more modules than slots: their switches are not restarted
  Module& m = g_modules[slot];
  m.begin.store(b, std::memory_order_relaxed);
  m.end.store(reinterpret_cast<std::uintptr_t>(end), std::memory_order_relaxed);
  m.refs.store(1, std::memory_order_release);
  if (slot == used) g_used.store(used + 1, std::memory_order_release);
}

__attribute__((visibility("default"))) void pkeys_pkru_unregister_switches(const void* begin) {
  pkeys::arch::SpinGuard guard;
  if (Module* m = registered_module(reinterpret_cast<std::uintptr_t>(begin)))
    m->refs.fetch_sub(1, std::memory_order_release);
}

}  // extern "C"
