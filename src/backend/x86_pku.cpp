// SPDX-License-Identifier: MIT
#include "backend/x86_pku.hpp"

#include <sys/syscall.h>

#include <cerrno>
#include <new>

#include "arch/x86_64/signal_frame.hpp"
#include "arch/x86_64/syscall.hpp"
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

X86PkuBackend::X86PkuBackend() noexcept { arch::init_signal_frame_layout(); }

bool X86PkuBackend::kernel_supports_pkeys() noexcept {
  // Access disabled, the default: the number keeps no right once freed.
  const long k = kernel_pkey_alloc(0, PKEY_DISABLE_ACCESS);
  if (k < 0) return false;
  kernel_pkey_free(static_cast<int>(k));
  return true;
}

void X86PkuBackend::retry_quarantine() noexcept {
  for (int key = 0; key < kMaxKeys; ++key) {
    if (!(quarantine_ & (1u << key)) || reset_in_other_threads(key) != 0) continue;
    kernel_pkey_free(key);
    quarantine_ &= ~(1u << key);
  }
}

int X86PkuBackend::acquire_key(unsigned rights) noexcept {
  if (quarantine_) retry_quarantine();
  // The kernel sets the calling thread's rights and hands out the lowest
  // free number; other threads were reset when the number was last freed.
  return static_cast<int>(kernel_pkey_alloc(0, rights));
}

int X86PkuBackend::release_key(int key) noexcept {
  pkeys_wrpkru(pkeys_pkru_with(pkeys_rdpkru(), key, PKEY_DISABLE_ACCESS));
  if (reset_in_other_threads(key) != 0) {
    quarantine_ |= 1u << key;  // the program's key is gone either way
    return 0;
  }
  return static_cast<int>(kernel_pkey_free(key));
}

int X86PkuBackend::protect(std::uintptr_t addr, std::size_t len, int prot, int key) noexcept {
  return static_cast<int>(sys::raw_syscall(SYS_pkey_mprotect, static_cast<long>(addr),
                                           static_cast<long>(len), prot, key));
}

int X86PkuBackend::set_rights(int key, unsigned rights) noexcept {
  const std::uint32_t old = pkeys_rdpkru();
  const std::uint32_t now = pkeys_pkru_with(old, key, rights);
  if (now != old) pkeys_wrpkru(now);
  return 0;
}

unsigned X86PkuBackend::get_rights(int key) const noexcept {
  return pkeys_pkru_rights(pkeys_rdpkru(), key);
}

int X86PkuBackend::set_rights_in(pid_t tid, int key, unsigned rights, std::vector<pid_t>* missed) noexcept {
  if (missed) missed->clear();
  if (tid == static_cast<pid_t>(sys::raw_syscall(SYS_gettid))) return set_rights(key, rights);
  try {
    // kAllThreads is the handshake's kOtherThreads plus the caller.
    const int r = apply_in_threads({key, rights}, tid == kAllThreads ? kOtherThreads : tid, missed);
    if (tid == kAllThreads && r != -ESRCH && r != -EBUSY) set_rights(key, rights);  // the caller too
    return r;
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
  const std::uint32_t old = pkeys_rdpkru();
  const std::uint32_t now = (old & ~mask) | (static_cast<std::uint32_t>(saved) & mask);
  if (now != old) pkeys_wrpkru(now);
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
  if (pkru != pkeys_rdpkru()) pkeys_wrpkru(pkru);
  return 0;
}

int X86PkuBackend::fault_key(const siginfo_t& si) const noexcept {
  if (si.si_signo != SIGSEGV || si.si_code != SEGV_PKUERR) return -1;
  return static_cast<int>(si.si_pkey);
}

}  // namespace pkeys::backend
