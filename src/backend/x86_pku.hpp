// SPDX-License-Identifier: MIT
// The x86 PKU backend: the kernel's protection keys, enforced by the CPU.
//
// Keys come from the kernel's pkey_alloc (by syscall number, so an old
// glibc works); rights are the calling thread's PKRU, read and written with
// RDPKRU/WRPKRU. Freeing resets the key in every thread (see
// thread_signal.hpp); a number that some thread could not be reached
// to reset stays allocated in the kernel, quarantined, until a later
// attempt (reclaim_keys) reaches them all, so it is never handed out with
// stale rights. Every read-modify-write of PKRU is a restartable switch
// (pkeys_pkru_update), so a cross-thread change is never lost.
#pragma once

#include <atomic>
#include <cstdint>

#include "backend/backend.hpp"
#include "backend/backend_concept.hpp"

namespace pkeys::backend {

class X86PkuBackend final : public Backend {
 public:
  static constexpr const char* kName = "x86-pku";
  static constexpr unsigned kFeatures = kHardware | kPerThreadRights | kExecuteOnly | kFaultPkey;
  static constexpr int kMaxKeys = 16;  // PKRU holds 16 keys' rights

  X86PkuBackend() noexcept;

  const char* name() const noexcept override { return kName; }
  unsigned capabilities() const noexcept override { return kFeatures; }
  int max_keys() const noexcept override { return kMaxKeys; }
  int acquire_key(unsigned rights) noexcept override;
  int release_key(int key) noexcept override;
  int protect(std::uintptr_t addr, std::size_t len, int prot, int key) noexcept override;
  int set_rights(int key, unsigned rights) noexcept override;
  unsigned get_rights(int key) const noexcept override;
  bool rights_in_register() const noexcept override { return true; }
  bool owned_switch_inline() const noexcept override { return bmi1_; }
  int set_rights_in(pid_t tid, int key, unsigned rights, std::vector<pid_t>* missed,
                    KeyCheck still_valid) noexcept override;
  bool reclaim_keys() noexcept override;
  void set_start_rights(int key, int rights) noexcept override;
  std::uint64_t save_thread_rights() const noexcept override;
  void restore_thread_rights(std::uint64_t saved, std::uint64_t keys) noexcept override;
  unsigned interrupted_rights(const void* ucontext, int key) const noexcept override;
  int adopt_interrupted_rights(const void* ucontext) noexcept override;
  int fault_key(const siginfo_t& si) const noexcept override;

  // Probes the kernel: true when pkey_alloc works here.
  static bool kernel_supports_pkeys() noexcept;

 private:
  std::atomic<std::uint32_t> quarantine_{0};  // bit k: number k awaits its reset (no allocation)
  bool bmi1_;  // the CPU has ANDN and BEXTR (the C ABI's inline pkey_set and pkey_get)
};

static_assert(KeyHardware<X86PkuBackend>);

}  // namespace pkeys::backend
