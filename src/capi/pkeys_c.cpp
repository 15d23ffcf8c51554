// SPDX-License-Identifier: MIT
// The C ABI: a thin layer over the core Runtime.
#include "pkeys/pkeys.h"

#include <new>

#include <pthread.h>
#include <sys/mman.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdint>
#include <cstring>

#include "backend/register_rights.hpp"
#include "capi/errno_result.hpp"
#include "core/diagnostics.hpp"
#include "core/key_table.hpp"
#include "core/wx_policy.hpp"
#include "core/runtime.hpp"

using pkeys::capi::ErrnoResult;
using pkeys::core::Runtime;

namespace {

// Linked from libpkeys.a, a program's only reference to pthread_create may
// be libstdc++'s, which the linker reads after libpkeys.a: this one brings
// pkeys' pthread_create (capi/interpose_threads.cpp) in with the C ABI.
[[gnu::used]] const void* const keep_thread_interposer = reinterpret_cast<const void*>(&::pthread_create);

// The Runtime allocates; out of memory becomes ENOMEM, never an exception
// through a C caller.
template <class F>
int call(F&& f) noexcept {
  ErrnoResult result;
  try {
    return static_cast<int>(result(f(Runtime::instance())));
  } catch (const std::bad_alloc&) {
    return static_cast<int>(result(-ENOMEM));
  } catch (...) {
    return static_cast<int>(result(-EIO));
  }
}

// Calls `f` with the vkey layer, or fails as "no such vkey" without a backend.
template <class F>
int call_vkeys(F&& f, int without = -EINVAL) noexcept {
  return call([&](Runtime& rt) -> long {
    pkeys::core::VKeys* v = rt.vkeys();
    return v ? f(*v) : without;
  });
}

[[gnu::noinline, gnu::cold]] int checked_set(int pkey, unsigned rights) noexcept {
  return call([&](Runtime& rt) { return rt.set(pkey, rights); });
}

// A free cleared the key while pkey_set switched: its rights taken back,
// and the call fails as for any key the program does not hold.
[[gnu::noinline, gnu::cold]] int freed_during_set(int pkey) noexcept {
  pkeys::backend::register_take_back_rights(pkey);
  errno = EINVAL;
  int failed = -1;
  // Opaque, so that pkey_set tail-calls this (Clang, knowing the -1, would
  // call it and keep a stack frame on the hot path for the call).
  __asm__("" : "+r"(failed));
  return failed;
}

// The same, given the rights in the key's place (pkey_set's fast path keeps
// neither the rights nor the shift alive across its switch).
[[gnu::noinline, gnu::cold]] int checked_set_bits(int pkey, std::uint32_t bits) noexcept {
  return checked_set(pkey, std::rotr(bits, static_cast<int>(PKEYS_PKRU_SHIFT(pkey))));
}

[[gnu::noinline, gnu::cold]] int checked_get(int pkey) noexcept {
  return call([&](Runtime& rt) { return rt.get(pkey); });
}

[[gnu::noinline, gnu::cold]] int checked_vkey_begin(int vkey, unsigned rights) noexcept {
  return call_vkeys([&](auto& v) { return v.begin(vkey, rights); });
}

[[gnu::noinline, gnu::cold]] int checked_vkey_end(int vkey) noexcept {
  return call_vkeys([&](auto& v) { return v.end(vkey); });
}

}  // namespace

extern "C" {

int pkey_alloc(unsigned int flags, unsigned int access_rights) __THROW {
  return call([&](Runtime& rt) { return rt.alloc(flags, access_rights); });
}

int pkey_free(int pkey) __THROW {
  const bool strict = pkeys::core::free_mode() == pkeys::core::FreeMode::strict;
  return call([&](Runtime& rt) { return rt.free(pkey, strict); });
}

int pkeys_free_strict(int pkey) __THROW {
  return call([&](Runtime& rt) { return rt.free(pkey, true); });
}

int pkeys_set_free_mode(int mode) __THROW {
  if (mode != PKEYS_FREE_QUARANTINE && mode != PKEYS_FREE_STRICT) {
    errno = EINVAL;
    return -1;
  }
  pkeys::core::set_free_mode(static_cast<pkeys::core::FreeMode>(mode));
  return 0;
}

int pkeys_get_free_mode(void) __THROW { return static_cast<int>(pkeys::core::free_mode()); }

int pkeys_reclaim_keys(void) __THROW {
  return call([&](Runtime& rt) { return rt.reclaim_keys(); });
}

int pkeys_get_quarantined(int* out, int max) __THROW {
  if (max < 0 || (max > 0 && !out)) {
    errno = EINVAL;
    return -1;
  }
  // Never constructs the Runtime: without it nothing is quarantined.
  const Runtime* rt = Runtime::if_constructed();
  const std::uint64_t quarantined = rt ? rt->quarantined() : 0;
  int n = 0;
  for (int key = 1; key < Runtime::kKeyLimit; ++key) {
    if (!((quarantined >> key) & 1)) continue;
    if (n < max) out[n] = key;
    ++n;
  }
  return n;
}

int pkey_mprotect(void* addr, size_t len, int prot, int pkey) __THROW {
  return call([&](Runtime& rt) -> long {
    if (int r = pkeys::core::check_wx("pkey_mprotect", addr, len, prot); r < 0) return r;
    return rt.protect(addr, len, prot, pkey);
  });
}

// The hot path, as cheap as glibc's own: a key of the program's whose rights
// are the thread's register (never on the emulation, before the Runtime
// exists or on a CPU without BMI1: the limit word is 0 there) is switched
// inline, after the same checks as Runtime::set (an allocated key other
// than 0, valid rights).
// Everything else, failures included, takes the checked path.
// (The checked paths are out of line, so that the hot one saves no
// registers.)
// The key's range is checked by the switch (a limit that is 0 where it
// may not run), its rights here.
int pkey_set(int pkey, unsigned int access_rights) __THROW {
  if (pkeys::core::valid_rights(access_rights)) [[likely]] {
    using pkeys::backend::OwnedSwitch;
    const std::uint32_t bits = pkeys::backend::register_rights_bits(pkey, access_rights);
    const auto r = pkeys::backend::register_set_bits_if_owned(
        pkey, bits, pkeys::core::g_key_table.owned_switch_limit_word(),
        pkeys::core::g_key_table.register_fields_not_held_word());
    if (r.what == OwnedSwitch::done) [[likely]]
      return r.zero;  // the switch's own 0: no instruction to make one
    if (r.what == OwnedSwitch::freed_meanwhile) return freed_during_set(pkey);
    return checked_set_bits(pkey, bits);
  }
  return checked_set(pkey, access_rights);
}

int pkey_get(int pkey) __THROW {
  return pkeys::backend::register_get_rights_if_owned(
      pkey, pkeys::core::g_key_table.owned_switch_limit_word(),
      pkeys::core::g_key_table.register_fields_not_held_word(), [pkey] { return checked_get(pkey); });
}

int pkey_query(int pkey) __THROW {
  return call([&](Runtime& rt) { return rt.query(pkey); });
}

int pkey_set_thread(pid_t tid, int pkey, unsigned int access_rights) __THROW {
  return call([&](Runtime& rt) { return rt.set_thread(tid, pkey, access_rights); });
}

int pkey_set_all(int pkey, unsigned int access_rights) __THROW {
  return call([&](Runtime& rt) { return rt.set_all(pkey, access_rights); });
}

int pkeys_sync_threads(void) __THROW {
  return call([&](Runtime& rt) { return rt.sync_threads(); });
}

int pkeys_sync_signal(void) __THROW {
  const int r = Runtime::sync_signal();
  if (r < 0) {
    errno = -r;
    return -1;
  }
  return r;
}

int pkeys_sync_missed(pid_t* tids, int max) __THROW {
  const auto& missed = Runtime::last_missed();
  const int n = static_cast<int>(missed.size());
  if (tids && max > 0) std::copy_n(missed.begin(), std::min(n, max), tids);
  return n;
}

int pkeys_signal_enter(const void* ucontext) __THROW {
  // The input first, so that NULL fails alike before and after the Runtime
  // exists.
  if (!ucontext) {
    errno = EINVAL;
    return -1;
  }
  const int saved_errno = errno;  // a signal handler's first call
  // Never constructs the Runtime here: without it no key exists to adopt.
  Runtime* rt = Runtime::if_constructed();
  const int r = rt ? rt->signal_enter(ucontext) : 0;
  errno = r < 0 ? -r : saved_errno;
  return r < 0 ? -1 : 0;
}

unsigned long long pkeys_rights_save(void) __THROW { return Runtime::instance().save_rights(); }

void pkeys_rights_restore(unsigned long long saved) __THROW {
  Runtime::instance().restore_rights(saved);
}

void pkeys_sigsetjmp_save_(pkeys_sigjmp_buf env) __THROW {
  env[0].rights = Runtime::instance().save_rights();
  env[0].vkey_depth = pkeys::core::VKeys::open_depth();
}

void pkeys_siglongjmp(pkeys_sigjmp_buf env, int val) __THROW {
  Runtime& rt = Runtime::instance();
  // The vkeys opened since first: their ends put their keys' bits back.
  if (pkeys::core::VKeys* v = rt.vkeys()) v->close_above(env[0].vkey_depth);
  rt.restore_rights(env[0].rights);
  siglongjmp(env[0].jmp, val);
}

int pkeys_set_label(int pkey, const char* label) __THROW {
  return call([&](Runtime& rt) { return rt.set_label(pkey, label); });
}

int pkey_label(int pkey, const char* label) __THROW { return pkeys_set_label(pkey, label); }

int pkeys_get_label(int pkey, char* buf, size_t len) __THROW {
  return call([&](Runtime& rt) { return rt.get_label(pkey, buf, len); });
}

int pkeys_diagnose_faults(int enable) __THROW {
  return call([&](Runtime&) { return pkeys::core::enable_fault_diagnostics(enable != 0); });
}

int pkeys_vkey_create(unsigned int access_rights) __THROW {
  return call_vkeys([&](auto& v) { return v.create(access_rights); }, -ENOSPC);
}

int pkeys_vkey_destroy(int vkey) __THROW {
  return call_vkeys([&](auto& v) { return v.destroy(vkey); });
}

int pkeys_vkey_mprotect(void* addr, size_t len, int prot, int vkey) __THROW {
  if (vkey == 0) return pkey_mprotect(addr, len, prot, 0);
  return call_vkeys([&](auto& v) -> long {
    if (int r = pkeys::core::check_wx("pkeys_vkey_mprotect", addr, len, prot); r < 0) return r;
    return v.protect(reinterpret_cast<std::uintptr_t>(addr), len, prot, vkey);
  });
}

// A cached vkey (x86-pku) opens and closes inline (VKeys::begin_fast and
// end_fast); anything else, failures included, takes the checked path.
int pkeys_vkey_begin(int vkey, unsigned int access_rights) __THROW {
  if (pkeys::core::VKeys::begin_fast(vkey, access_rights) == 0) [[likely]]
    return 0;
  return checked_vkey_begin(vkey, access_rights);
}

int pkeys_vkey_end(int vkey) __THROW {
  if (pkeys::core::VKeys::end_fast(vkey) == 0) [[likely]]
    return 0;
  return checked_vkey_end(vkey);
}

int pkeys_vkey_set(int vkey, unsigned int access_rights) __THROW {
  return call_vkeys([&](auto& v) { return v.set(vkey, access_rights); });
}

int pkeys_vkey_get(int vkey) __THROW {
  return call_vkeys([&](auto& v) { return v.get(vkey); });
}

int pkeys_vkey_fault(const siginfo_t* si) __THROW {
  if (!si) return -1;  // the input first: before and after the Runtime exists
  const int saved_errno = errno;
  Runtime* rt = Runtime::if_constructed();  // a signal handler's call: never constructs
  const int vkey = rt ? rt->fault_vkey(si) : -1;
  errno = saved_errno;
  return vkey;
}

int pkeys_vkey_get_stats(struct pkeys_vkey_stats* out) __THROW {
  return call([&](Runtime& rt) -> long {
    if (!out) return -EINVAL;
    using Stats = struct pkeys_vkey_stats;
    *out = Stats{};
    if (!rt.vkeys()) return 0;
    const pkeys::core::VKeyStats s = rt.vkeys()->stats();
    *out = Stats{s.hits, s.misses, s.evictions, s.live, s.pinned, s.cached, s.capacity, s.hardware_keys};
    return 0;
  });
}

int pkeys_vkey_set_cache_limit(int max) __THROW {
  return call_vkeys([&](auto& v) { return v.set_capacity(max); });
}

int pkeys_mprotect_execute_only(void* addr, size_t len) __THROW {
  return call([&](Runtime& rt) { return rt.make_execute_only(addr, len); });
}

void* pkeys_mmap_execute_only(const void* code, size_t len) __THROW {
  if (!(pkeys_capabilities() & PKEYS_CAP_EXECUTE_ONLY)) {
    errno = ENOTSUP;
    return MAP_FAILED;
  }
  void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return MAP_FAILED;
  if (code) std::memcpy(p, code, len);
  if (pkeys_mprotect_execute_only(p, len) != 0) {
    const int saved = errno;
    ::munmap(p, len);
    errno = saved;
    return MAP_FAILED;
  }
  return p;
}

int pkeys_set_wx_policy(int policy) __THROW {
  if (policy != PKEYS_WX_OFF && policy != PKEYS_WX_LOG && policy != PKEYS_WX_DENY) {
    errno = EINVAL;
    return -1;
  }
  pkeys::core::set_wx_policy(static_cast<pkeys::core::WxPolicy>(policy));
  return 0;
}

int pkeys_get_wx_policy(void) __THROW { return static_cast<int>(pkeys::core::wx_policy()); }

int pkeys_get_ranges(struct pkeys_range* out, int max) __THROW {
  return call([&](Runtime& rt) -> long {
    const auto ranges = rt.ranges();
    for (int i = 0; out && i < max && i < static_cast<int>(ranges.size()); ++i) {
      const auto& r = ranges[static_cast<std::size_t>(i)];
      out[i] = pkeys_range{reinterpret_cast<void*>(r.start), r.end - r.start, r.tag.is_vkey() ? -1 : r.tag.key(),
                           r.tag.vkey(), r.prot};
    }
    return static_cast<long>(ranges.size());
  });
}

const char* pkeys_backend(void) __THROW { return Runtime::instance().backend_name(); }

// Built from the header this library was compiled with, so it cannot drift.
#define PKEYS_STR_(x) #x
#define PKEYS_XSTR_(x) PKEYS_STR_(x)
const char* pkeys_version(void) __THROW {
  return PKEYS_XSTR_(PKEYS_VERSION_MAJOR) "." PKEYS_XSTR_(PKEYS_VERSION_MINOR) "." PKEYS_XSTR_(
      PKEYS_VERSION_PATCH);
}

const char* pkeys_backend_reason(void) __THROW {
  return Runtime::instance().backend_reason().c_str();
}

unsigned int pkeys_capabilities(void) __THROW { return Runtime::instance().capabilities(); }

int pkeys_max_keys(void) __THROW { return Runtime::instance().max_keys(); }

int pkeys_fault_pkey(const siginfo_t* si) __THROW {
  if (!si) return -1;  // the input first: before and after the Runtime exists
  const int saved_errno = errno;  // called from signal handlers
  Runtime* rt = Runtime::if_constructed();  // never constructs: without it no key exists
  const int key = rt ? rt->fault_key(si) : -1;
  errno = saved_errno;
  return key;
}

}  // extern "C"
