// SPDX-License-Identifier: MIT
// Runtime: the process-wide composition behind both APIs.
//
// It picks the backend at first use and puts the rooms together: the key
// table (key_table.hpp, constant-initialised), the address space
// (address_space.hpp: lock, records, page protections), the vkeys
// (vkeys.hpp). Each operation checks its arguments, takes the lock where
// the rooms need it, and hands over to them. All return a value >= 0 or
// -errno, and change nothing on failure.
#pragma once

#include <signal.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backend/backend.hpp"
#include "core/address_space.hpp"
#include "core/fault_report.hpp"
#include "core/key_table.hpp"
#include "core/vkeys.hpp"

namespace pkeys::core {

class [[gnu::visibility("hidden")]] Runtime {
 public:
  static constexpr int kKeyLimit = KeyTable::kKeyLimit;
  static constexpr unsigned kAllocAllThreads = KeyTable::kAllocAllThreads;

  // Constructs the Runtime at first use (chooses the backend).
  static Runtime& instance();
  // The Runtime if it exists, else null; never constructs, allocates or
  // locks: for signal handlers.
  static Runtime* if_constructed() noexcept { return constructed_.load(std::memory_order_acquire); }

  const char* backend_name() const noexcept { return backend_ ? backend_->name() : "none"; }
  const std::string& backend_reason() const noexcept { return reason_; }
  unsigned capabilities() const noexcept { return backend_ ? backend_->capabilities() : 0; }
  int max_keys() const noexcept { return backend_ ? backend_->max_keys() : 0; }

  int alloc(unsigned flags, unsigned rights);
  // A key that mapped pages still carry: -EBUSY when `strict`, else freed
  // and its number quarantined (key_table.hpp).
  int free(int key, bool strict);
  // Quarantined numbers no page carries any more go back to the backend;
  // returns how many.
  int reclaim_keys();
  std::uint64_t quarantined() const noexcept { return keys_.quarantined_mask(); }
  int protect(void* addr, std::size_t len, int prot, int key);
  int set(int key, unsigned rights);
  int get(int key) const;    // -EINVAL for a key not allocated
  int query(int key) const;  // -EBADF for a key not allocated
  int fault_key(const siginfo_t* si) noexcept;

  // Rights in other threads.
  int set_thread(pid_t tid, int key, unsigned rights);
  int set_all(int key, unsigned rights);
  int sync_threads();  // the handshake alone
  static int sync_signal() noexcept;  // the signal it uses, or -errno
  // A thread starts, before its start routine: the registry
  // (backend/thread_registry.hpp; it unregisters by itself). Needs no Runtime.
  static void on_thread_start() noexcept;
  // Threads that did not apply the calling thread's last cross-thread change.
  static std::vector<pid_t>& last_missed();

  // Signals: recovery points and handlers.
  std::uint64_t save_rights() const noexcept;
  void restore_rights(std::uint64_t saved) noexcept;
  int signal_enter(const void* ucontext) noexcept;

  // Virtual keys; null without a backend.
  VKeys* vkeys() noexcept { return vkeys_ ? &*vkeys_ : nullptr; }
  int fault_vkey(const siginfo_t* si) noexcept;

  // Execute-only memory: [addr, addr+len) becomes PROT_EXEC under a key
  // that every thread has access-disabled. -ENOTSUP without the hardware.
  int make_execute_only(void* addr, std::size_t len);

  // The recorded ranges, for observability.
  std::vector<TaggedRange> ranges() { return space_.snapshot(); }

  int set_label(int key, const char* label);
  int get_label(int key, char* buf, std::size_t len);
  // Fills `report` for a SIGSEGV caused by a key; false for other faults.
  bool describe_fault(const siginfo_t* si, const void* ucontext, FaultReport* report) noexcept;

  // The mmap family, keeping the records in step (see capi/interpose.cpp).
  // Each may take the last range of a quarantined number away.
  long unmap(void* addr, std::size_t len) {
    return reclaiming([&] { return space_.unmap(addr, len); });
  }
  long map(void* addr, std::size_t len, int prot, int flags, int fd, long offset) {
    return reclaiming([&] { return space_.map(addr, len, prot, flags, fd, offset); });
  }
  long remap(void* old_addr, std::size_t old_len, std::size_t new_len, int flags, void* new_addr) {
    return reclaiming([&] { return space_.remap(old_addr, old_len, new_len, flags, new_addr); });
  }

 private:
  Runtime(std::unique_ptr<backend::Backend> backend, std::string reason);
  static Runtime* create();
  static void prepare_fork() noexcept;
  static void after_fork() noexcept;
  static void after_fork_in_child() noexcept;
  // The key a SIGSEGV is blamed on from the records (locks), or -1.
  int fault_key_from_records(const siginfo_t& si) noexcept;

  // Quarantine. `f` changes mappings; a quarantined number whose last
  // recorded range it took away is released after it (best effort: a
  // failure leaves the number quarantined, never fails `f`'s call).
  template <class F>
  long reclaiming(F&& f) {
    const std::uint64_t before = quarantined_with_ranges();  // one load while none is quarantined
    const long r = f();
    if (before != 0) {
      try {
        if (const std::uint64_t gone = before & ~quarantined_with_ranges()) end_quarantines(gone);
      } catch (...) {  // out of memory reading the mappings: still quarantined
      }
    }
    return r;
  }
  // Quarantined numbers with a recorded range (takes the lock).
  std::uint64_t quarantined_with_ranges();
  // Releases those of `candidates` no page carries; returns how many.
  int end_quarantines(std::uint64_t candidates);
  bool quarantined_key_in_use_locked(int key);

  static constinit std::atomic<Runtime*> constructed_;
  std::unique_ptr<backend::Backend> backend_;
  std::string reason_;
  static constexpr KeyTable& keys_ = g_key_table;
  AddressSpace space_;
  std::optional<VKeys> vkeys_;  // with a backend
};

}  // namespace pkeys::core
