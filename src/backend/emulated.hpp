// SPDX-License-Identifier: MIT
// The emulated backend: protection keys on any Linux, enforced with
// mprotect.
//
// Keys are software numbers (16, key 0 the default). Rights are
// process-wide, kept in a table: setting them asks the core (through
// PageProtections) to re-protect every page of the key. DISABLE_ACCESS
// maps pages PROT_NONE (execution too, since x86 cannot deny reads of
// executable pages otherwise); DISABLE_WRITE removes PROT_WRITE. A blocked
// access is SIGSEGV (SEGV_ACCERR) with no key named: the core attributes it
// from its records.
#pragma once

#include <array>
#include <atomic>
#include <cerrno>

#include "backend/backend.hpp"
#include "backend/backend_concept.hpp"

namespace pkeys::backend {

class EmulatedBackend final : public Backend {
 public:
  static constexpr const char* kName = "emulated";
  static constexpr unsigned kFeatures = 0;
  static constexpr int kMaxKeys = 16;

  const char* name() const noexcept override { return kName; }
  unsigned capabilities() const noexcept override { return kFeatures; }
  int max_keys() const noexcept override { return kMaxKeys; }
  int acquire_key(unsigned rights) noexcept override;
  int release_key(int key) noexcept override;
  // A key's pages get the protection its rights enforce; key 0 and -1 are
  // a plain mprotect (the core splits a range by key for -1).
  int protect(std::uintptr_t addr, std::size_t len, int prot, int key) noexcept override;
  int set_rights(int key, unsigned rights) noexcept override;
  unsigned get_rights(int key) const noexcept override;
  // Rights are process-wide: one set serves every thread.
  // (The core holds its lock: a free of the key cannot run meanwhile.)
  int set_rights_in(pid_t tid, int key, unsigned rights, std::vector<pid_t>* missed,
                    KeyCheck still_valid) noexcept override;
  void attach(PageProtections& pages) noexcept override { pages_ = &pages; }

 private:
  std::array<std::atomic<unsigned>, kMaxKeys> rights_{};
  unsigned used_ = 1;  // bit k: key k handed out; key 0 always
  PageProtections* pages_ = nullptr;
};

static_assert(KeyHardware<EmulatedBackend>);

}  // namespace pkeys::backend
