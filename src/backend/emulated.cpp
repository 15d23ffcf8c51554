// SPDX-License-Identifier: MIT
#include "backend/emulated.hpp"

#include <sys/syscall.h>
#include <unistd.h>

#include "arch/x86_64/syscall.hpp"
#include "backend/thread_signal.hpp"
#include "os/pages.hpp"
#include "pkeys/pkeys.h"

namespace pkeys::backend {
namespace {

long raw_mprotect(std::uintptr_t addr, std::size_t len, int prot) noexcept {
  return sys::raw_syscall(SYS_mprotect, static_cast<long>(addr), static_cast<long>(len), prot);
}

}  // namespace

int EmulatedBackend::acquire_key(unsigned rights) noexcept {
  for (int k = 1; k < kMaxKeys; ++k) {
    if (used_ & (1u << k)) continue;
    used_ |= 1u << k;
    rights_[k].store(rights, std::memory_order_relaxed);
    return k;
  }
  return -ENOSPC;
}

int EmulatedBackend::release_key(int key) noexcept {
  used_ &= ~(1u << key);
  rights_[key].store(PKEY_DISABLE_ACCESS, std::memory_order_relaxed);
  return 0;
}

int EmulatedBackend::protect(std::uintptr_t addr, std::size_t len, int prot, int key) noexcept {
  const int want = key > 0 ? os::enforced_prot(prot, get_rights(key)) : prot;
  return static_cast<int>(raw_mprotect(addr, len, want));
}

int EmulatedBackend::set_rights(int key, unsigned rights) noexcept {
  const unsigned old = get_rights(key);
  if (old == rights) return 0;
  if (pages_) {
    if (int r = pages_->enforce(key, rights, static_cast<int>(old)); r < 0) {
      pages_->enforce(key, old, -1);  // all or nothing
      return r;
    }
  }
  rights_[key].store(rights, std::memory_order_relaxed);
  return 0;
}

int EmulatedBackend::set_rights_in(pid_t tid, int key, unsigned rights, std::vector<pid_t>* missed,
                                   KeyCheck still_valid) noexcept {
  if (missed) missed->clear();
  if (tid != kAllThreads && (tid < 0 || !is_live_thread(tid))) return -ESRCH;
  if (still_valid && !still_valid(key)) return -EINVAL;
  return set_rights(key, rights);
}

unsigned EmulatedBackend::get_rights(int key) const noexcept {
  return key == 0 ? 0 : rights_[key].load(std::memory_order_relaxed);
}

}  // namespace pkeys::backend
