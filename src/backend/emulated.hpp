// SPDX-License-Identifier: MIT
// The emulated backend: protection keys on any Linux, enforced with
// mprotect.
//
// Keys are software numbers (16, key 0 the default). Rights are
// process-wide: setting them re-protects every page of the key, adjacent
// ranges in one call. DISABLE_ACCESS maps pages PROT_NONE (execution too,
// since x86 cannot deny reads of executable pages otherwise);
// DISABLE_WRITE removes PROT_WRITE. A blocked access is SIGSEGV
// (SEGV_ACCERR), attributed to its key from the registry.
#pragma once

#include <array>
#include <atomic>
#include <cerrno>

#include "backend/backend.hpp"

namespace pkeys::backend {

class EmulatedBackend final : public Backend {
 public:
  static constexpr int kMaxKeys = 16;

  const char* name() const noexcept override { return "emulated"; }
  unsigned capabilities() const noexcept override { return 0; }
  int max_keys() const noexcept override { return kMaxKeys; }
  int acquire_key(unsigned rights) noexcept override;
  int release_key(int key) noexcept override;
  int protect(std::uintptr_t addr, std::size_t len, int prot, int key,
              const core::RangeRegistry& ranges) noexcept override;
  int set_rights(int key, unsigned rights,
                 const core::RangeRegistry& ranges) noexcept override;
  unsigned get_rights(int key) const noexcept override;
  // Rights are process-wide: one set serves every thread.
  int set_rights_in(pid_t tid, int key, unsigned rights, const core::RangeRegistry& ranges,
                    std::vector<pid_t>* missed) noexcept override;
  // Signals and jumps do not touch process-wide rights: nothing to save.
  std::uint64_t save_thread_rights() const noexcept override { return 0; }
  void restore_thread_rights(std::uint64_t, std::uint64_t) noexcept override {}
  unsigned interrupted_rights(const void*, int key) const noexcept override { return get_rights(key); }
  int adopt_interrupted_rights(const void*) noexcept override { return 0; }
  int fault_key(const siginfo_t& si,
                const core::RangeRegistry& ranges) const noexcept override;
  int key_in_use(int) const noexcept override { return -ENOSYS; }

 private:
  // Applies the enforced protection of each range of `key` under `rights`,
  // merging adjacent ranges with equal protection into one call.
  int apply(int key, unsigned rights, const core::RangeRegistry& ranges) noexcept;

  std::array<std::atomic<unsigned>, kMaxKeys> rights_{};
  unsigned used_ = 1;  // bit k: key k handed out; key 0 always
};

}  // namespace pkeys::backend
