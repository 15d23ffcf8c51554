// SPDX-License-Identifier: MIT
// Backend: how a platform enforces key rights. One self-contained unit per
// platform behind this interface; the Runtime (core) decides what is
// allowed, a backend only does it.
//
// Every method returns 0 (or a key number) on success and -errno on
// failure, leaves the caller's errno alone, and changes nothing on failure.
// The Runtime serialises all calls except set_rights/get_rights on a
// backend with PKEYS_CAP_PER_THREAD_RIGHTS, which run without a lock.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/range_registry.hpp"

namespace pkeys::backend {

class Backend {
 public:
  virtual ~Backend() = default;

  virtual const char* name() const noexcept = 0;
  virtual unsigned capabilities() const noexcept = 0;  // PKEYS_CAP_*
  virtual int max_keys() const noexcept = 0;

  // Takes the lowest free key number >= 1, giving the calling thread
  // `rights`; every other thread has access disabled. -ENOSPC when none.
  virtual int acquire_key(unsigned rights) noexcept = 0;
  // Returns a key no page carries any more. No thread keeps a right to it.
  virtual int release_key(int key) noexcept = 0;

  // pkey_mprotect of [addr, addr+len) with key -1 (keep), 0 or an acquired
  // key; `ranges` is the bookkeeping before the change.
  virtual int protect(std::uintptr_t addr, std::size_t len, int prot, int key,
                      const core::RangeRegistry& ranges) noexcept = 0;

  virtual int set_rights(int key, unsigned rights,
                         const core::RangeRegistry& ranges) noexcept = 0;
  virtual unsigned get_rights(int key) const noexcept = 0;

  // Sets `key`'s rights in thread `tid` of this process, or with tid 0 in
  // every thread, the caller included; returns once they applied it.
  // -ESRCH: no such thread. -ETIMEDOUT: `missed` lists who did not.
  virtual int set_rights_in(pid_t tid, int key, unsigned rights,
                            const core::RangeRegistry& ranges,
                            std::vector<pid_t>* missed) noexcept = 0;

  // The calling thread's rights on every key, packed (2 bits a key), and
  // their restoration for the keys in `keys` (bit k: key k). Signal-safe.
  virtual std::uint64_t save_thread_rights() const noexcept = 0;
  virtual void restore_thread_rights(std::uint64_t saved, std::uint64_t keys) noexcept = 0;

  // In a signal handler: the rights of the code the signal interrupted on
  // `key`, and giving the handler all of them. Signal-safe.
  virtual unsigned interrupted_rights(const void* ucontext, int key) const noexcept = 0;
  virtual int adopt_interrupted_rights(const void* ucontext) noexcept = 0;

  // The key whose rights caused this SIGSEGV, or -1. Async-signal-safe but
  // for `ranges`, which the caller has locked.
  virtual int fault_key(const siginfo_t& si,
                        const core::RangeRegistry& ranges) const noexcept = 0;

  // Whether a mapped page carries `key`, as the kernel knows it: 1 or 0;
  // -ENOSYS when the kernel cannot tell and the records must decide.
  virtual int key_in_use(int key) const noexcept = 0;
};

// Page protection that enforces process-wide `rights` on pages the program
// asked to have `prot`: DISABLE_ACCESS removes read, write and execute
// (x86 cannot deny reads of executable pages without PKU), DISABLE_WRITE
// removes write. Other bits, valid or not, pass to the kernel untouched.
constexpr int enforced_prot(int prot, unsigned rights) noexcept {
  constexpr int kRead = 0x1, kWrite = 0x2, kExec = 0x4;  // PROT_*
  if (rights & 0x1) return prot & ~(kRead | kWrite | kExec);  // PKEY_DISABLE_ACCESS
  if (rights & 0x2) return prot & ~kWrite;                      // PKEY_DISABLE_WRITE
  return prot;
}

}  // namespace pkeys::backend
