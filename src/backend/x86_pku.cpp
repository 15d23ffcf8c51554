// SPDX-License-Identifier: MIT
#include "backend/x86_pku.hpp"

#include <sys/syscall.h>

#include <cerrno>
#include <mutex>
#include <new>

#include "arch/x86_64/cpu_features.hpp"
#include "arch/x86_64/pkru_switches.hpp"
#include "arch/x86_64/signal_frame.hpp"
#include "arch/x86_64/syscall.hpp"
#include "backend/register_rights.hpp"
#include "backend/thread_registry.hpp"
#include "backend/thread_signal.hpp"
#include "pkeys/pkeys.h"
#include "pkeys/pkru.h"

#ifndef SEGV_PKUERR
#define SEGV_PKUERR 4  // si_code of a protection-key fault (older headers lack it)
#endif

namespace pkeys::backend {
namespace {

long kernel_pkey_alloc(unsigned flags, unsigned rights) noexcept {
  return sys::raw_syscall(SYS_pkey_alloc, flags, rights);
}
long kernel_pkey_free(int key) noexcept { return sys::raw_syscall(SYS_pkey_free, key); }

// Every other thread's rights on `key` reset to no access; -ENOMEM where
// the handshake could not allocate.
int reset_in_other_threads(int key) noexcept {
  try {
    return apply_in_threads({key, PKEY_DISABLE_ACCESS}, kOtherThreads, nullptr);
  } catch (const std::bad_alloc&) {
    return -ENOMEM;
  } catch (...) {  // a lock that failed: nothing was applied
    return -EIO;
  }
}

}  // namespace

X86PkuBackend::X86PkuBackend() noexcept : bmi1_(arch::read_cpu_features().bmi1) {
  arch::init_signal_frame_layout();
}

bool X86PkuBackend::kernel_supports_pkeys() noexcept {
  // Access disabled, the default: the number keeps no right once freed.
  const long k = kernel_pkey_alloc(0, PKEY_DISABLE_ACCESS);
  if (k < 0) return false;
  kernel_pkey_free(static_cast<int>(k));
  return true;
}

bool X86PkuBackend::reclaim_keys() noexcept {
  bool any = false;
  for (int key = 1; key < kMaxKeys; ++key) {
    const std::uint32_t bit = 1u << key;
    if (!(quarantine_.load(std::memory_order_acquire) & bit) || reset_in_other_threads(key) != 0) continue;
    if (!(quarantine_.fetch_and(~bit, std::memory_order_acq_rel) & bit)) continue;  // another thread's
    kernel_pkey_free(key);
    any = true;
  }
  return any;
}

int X86PkuBackend::acquire_key(unsigned rights) noexcept {
  // The kernel sets the calling thread's rights and hands out the lowest
  // free number; other threads were reset when the number was last freed.
  const long key = kernel_pkey_alloc(0, rights);
  // The kernel wrote this thread's PKRU: the same rights again through a
  // switch, so that the thread's copy knows them.
  if (key > 0) pkeys_pkru_set_rights(static_cast<int>(key), rights);
  return static_cast<int>(key);
}

int X86PkuBackend::release_key(int key) noexcept {
  pkeys_pkru_set_rights(key, PKEY_DISABLE_ACCESS);
  if (reset_in_other_threads(key) != 0) {
    // Some thread may keep rights: the number stays the kernel's until a
    // later reset reaches every thread (reclaim_keys). The program's key is
    // gone either way.
    quarantine_.fetch_or(1u << key, std::memory_order_acq_rel);
    return 0;
  }
  return static_cast<int>(kernel_pkey_free(key));
}

int X86PkuBackend::protect(std::uintptr_t addr, std::size_t len, int prot, int key) noexcept {
  return static_cast<int>(sys::raw_syscall(SYS_pkey_mprotect, static_cast<long>(addr),
                                           static_cast<long>(len), prot, key));
}

int X86PkuBackend::set_rights(int key, unsigned rights) noexcept {
  register_set_rights(key, rights);
  return 0;
}

unsigned X86PkuBackend::get_rights(int key) const noexcept { return register_get_rights(key); }

int X86PkuBackend::set_rights_in(pid_t tid, int key, unsigned rights, std::vector<pid_t>* missed,
                                 KeyCheck still_valid) noexcept {
  if (missed) missed->clear();
  try {
    if (tid == current_thread_id()) {
      // Under the handshake's lock, so that a free of the key is ordered.
      std::lock_guard lock(threads_mutex());
      if (still_valid && !still_valid(key)) return -EINVAL;
      return set_rights(key, rights);
    }
    // kAllThreads is the handshake's kOtherThreads plus the caller.
    return apply_in_threads({key, rights, tid == kAllThreads, still_valid},
                            tid == kAllThreads ? kOtherThreads : tid, missed);
  } catch (const std::bad_alloc&) {
    return -ENOMEM;
  } catch (...) {  // a lock that failed: nothing was applied
    return -EIO;
  }
}

std::uint64_t X86PkuBackend::save_thread_rights() const noexcept { return pkeys_rdpkru(); }

void X86PkuBackend::restore_thread_rights(std::uint64_t saved, std::uint64_t keys) noexcept {
  std::uint32_t mask = 0;
  for (int k = 0; k < kMaxKeys; ++k)
    if ((keys >> k) & 1) mask |= 3u << PKEYS_PKRU_SHIFT(k);
  pkeys_pkru_update(~mask, static_cast<std::uint32_t>(saved) & mask);
}

unsigned X86PkuBackend::interrupted_rights(const void* ucontext, int key) const noexcept {
  std::uint32_t pkru;
  if (!ucontext || !arch::frame_pkru(ucontext, &pkru)) return get_rights(key);
  return pkeys_pkru_rights(pkru, key);
}

int X86PkuBackend::adopt_interrupted_rights(const void* ucontext) noexcept {
  std::uint32_t pkru;
  if (!ucontext) return -EINVAL;
  if (!arch::frame_pkru(ucontext, &pkru)) return -ENOTSUP;
  // Interrupted inside a switch, between its two edits of the thread's
  // copy: the copy about to be replaced is half-edited, and the switch's
  // second edit would OR its bits into the whole value written here. Sent
  // back to its start, the switch redoes both edits on this value. (The
  // frame is the kernel's, writable; the pointer is const for callers.)
  (void)arch::restart_interrupted_switch(const_cast<void*>(ucontext));
  pkeys_pkru_update(0, pkru);
  return 0;
}

int X86PkuBackend::fault_key(const siginfo_t& si) const noexcept {
  if (si.si_signo != SIGSEGV || si.si_code != SEGV_PKUERR) return -1;
  return static_cast<int>(si.si_pkey);
}

void X86PkuBackend::set_start_rights(int key, int rights) noexcept { backend::set_start_rights(key, rights); }

}  // namespace pkeys::backend
