// SPDX-License-Identifier: MIT
#include "backend/emulated.hpp"

#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <vector>

#include "arch/x86_64/syscall.hpp"
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

int EmulatedBackend::protect(std::uintptr_t addr, std::size_t len, int prot, int key,
                             const core::RangeRegistry& ranges) noexcept {
  if (key > 0) return static_cast<int>(raw_mprotect(addr, len, enforced_prot(prot, get_rights(key))));
  if (key == 0 || ranges.empty()) return static_cast<int>(raw_mprotect(addr, len, prot));
  // Key -1 keeps each page's key: tagged pieces stay enforced.
  const auto pieces = ranges.pieces(addr, addr + len);
  if (pieces.size() == 1 && pieces[0].key == 0) return static_cast<int>(raw_mprotect(addr, len, prot));
  if (long r = os::check_mapped(addr, len); r < 0) return static_cast<int>(r);
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    const auto& p = pieces[i];
    // Only keys of this backend; the Runtime handles virtual-key pieces.
    const int want = p.key > 0 && p.key < kMaxKeys ? enforced_prot(prot, get_rights(p.key)) : prot;
    if (long r = raw_mprotect(p.start, p.end - p.start, want); r < 0) {
      // Undo the tagged pieces already changed; gaps had no recorded state.
      for (std::size_t j = 0; j < i; ++j)
        if (pieces[j].key > 0 && pieces[j].key < kMaxKeys)
          raw_mprotect(pieces[j].start, pieces[j].end - pieces[j].start,
                       enforced_prot(pieces[j].prot, get_rights(pieces[j].key)));
      return static_cast<int>(r);
    }
  }
  return 0;
}

int EmulatedBackend::apply(int key, unsigned rights, const core::RangeRegistry& ranges) noexcept {
  std::uintptr_t run_start = 0, run_end = 0;
  int run_prot = -1;
  int error = 0;
  auto flush = [&] {
    if (run_prot < 0) return;
    long r = raw_mprotect(run_start, run_end - run_start, run_prot);
    // A range unmapped behind pkeys' back (a raw munmap) is stale
    // bookkeeping, not a failure; it is pruned when the key is freed.
    if (r < 0 && r != -ENOMEM && error == 0) error = static_cast<int>(r);
  };
  ranges.for_each_of_key(key, [&](const core::TaggedRange& t) {
    const int want = enforced_prot(t.prot, rights);
    if (run_prot == want && run_end == t.start) {
      run_end = t.end;
      return;
    }
    flush();
    run_start = t.start;
    run_end = t.end;
    run_prot = want;
  });
  flush();
  return error;
}

int EmulatedBackend::set_rights(int key, unsigned rights,
                                const core::RangeRegistry& ranges) noexcept {
  const unsigned old = get_rights(key);
  if (old == rights) return 0;
  if (int r = apply(key, rights, ranges); r < 0) {
    apply(key, old, ranges);
    return r;
  }
  rights_[key].store(rights, std::memory_order_relaxed);
  return 0;
}

int EmulatedBackend::set_rights_in(pid_t tid, int key, unsigned rights,
                                   const core::RangeRegistry& ranges,
                                   std::vector<pid_t>* missed) noexcept {
  if (missed) missed->clear();
  if (tid != 0 && (tid < 0 || sys::raw_syscall(SYS_tgkill, ::getpid(), tid, 0) != 0)) return -ESRCH;
  return set_rights(key, rights, ranges);
}

unsigned EmulatedBackend::get_rights(int key) const noexcept {
  return key == 0 ? 0 : rights_[key].load(std::memory_order_relaxed);
}

int EmulatedBackend::fault_key(const siginfo_t& si, const core::RangeRegistry& ranges) const noexcept {
  if (si.si_signo != SIGSEGV || si.si_code != SEGV_ACCERR) return -1;
  const auto r = ranges.find(reinterpret_cast<std::uintptr_t>(si.si_addr));
  if (!r || r->key >= kMaxKeys) return -1;
  const unsigned rights = get_rights(r->key);
  // The key is to blame only where it denies what the pages would allow.
  const bool denies = ((rights & PKEY_DISABLE_ACCESS) && (r->prot & (PROT_READ | PROT_WRITE))) ||
                      ((rights & PKEY_DISABLE_WRITE) && (r->prot & PROT_WRITE));
  return denies ? r->key : -1;
}

}  // namespace pkeys::backend
