// SPDX-License-Identifier: MIT
// Runtime: the process-wide key manager behind both APIs.
//
// It owns the key table and the range registry and decides what is
// allowed (which keys exist, when a free is safe); the backend, chosen at
// first use, enforces rights. All operations return a value >= 0 or
// -errno, and change nothing on failure.
#pragma once

#include <signal.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backend/backend.hpp"
#include "core/fault_report.hpp"
#include "core/range_registry.hpp"
#include "core/vkeys.hpp"

namespace pkeys::core {

// Number of tagged ranges recorded; lets the mmap family skip all
// bookkeeping while no range is tagged.
extern std::atomic<std::size_t> g_tagged_ranges;

class Runtime {
 public:
  static constexpr int kKeyLimit = 64;  // key numbers the table can hold

  static Runtime& instance();

  const char* backend_name() const noexcept { return backend_ ? backend_->name() : "none"; }
  const std::string& backend_reason() const noexcept { return reason_; }
  unsigned capabilities() const noexcept { return backend_ ? backend_->capabilities() : 0; }
  int max_keys() const noexcept { return backend_ ? backend_->max_keys() : 0; }

  bool is_allocated(int key) const noexcept {
    return key >= 0 && key < kKeyLimit && (allocated_.load(std::memory_order_acquire) >> key) & 1;
  }

  static constexpr unsigned kAllocAllThreads = 0x40000000u;  // PKEY_ALLOC_ALL_THREADS
  int alloc(unsigned flags, unsigned rights);
  int free(int key);
  int protect(void* addr, std::size_t len, int prot, int key);
  int set(int key, unsigned rights);
  int get(int key) const;    // -EINVAL for a key not allocated
  int query(int key) const;  // -EBADF for a key not allocated
  int fault_key(const siginfo_t* si) noexcept;

  // Rights in other threads.
  int set_thread(pid_t tid, int key, unsigned rights);
  int set_all(int key, unsigned rights);
  int sync_threads();  // the handshake alone
  // Threads that did not apply the calling thread's last cross-thread change.
  static std::vector<pid_t>& last_missed();

  // Signals: recovery points and handlers.
  std::uint64_t save_rights() const noexcept;
  void restore_rights(std::uint64_t saved) noexcept;
  int signal_enter(const void* ucontext) noexcept;

  // Virtual keys; null without a backend.
  VKeys* vkeys() noexcept { return vkeys_.get(); }
  int fault_vkey(const siginfo_t* si) noexcept;

  // Execute-only memory: [addr, addr+len) becomes PROT_EXEC under a key
  // that every thread has access-disabled. -ENOTSUP without the hardware.
  int make_execute_only(void* addr, std::size_t len);

  // The recorded ranges, for observability.
  std::vector<TaggedRange> ranges() const;

  int set_label(int key, const char* label);
  int get_label(int key, char* buf, std::size_t len) const;
  // Fills `report` for a SIGSEGV caused by a key; false for other faults.
  bool describe_fault(const siginfo_t* si, const void* ucontext, FaultReport* report) noexcept;

  // The mmap family, keeping the registry in step (see capi/interpose.cpp).
  long unmap(void* addr, std::size_t len);
  long map(void* addr, std::size_t len, int prot, int flags, int fd, long offset);
  long remap(void* old_addr, std::size_t old_len, std::size_t new_len, int flags, void* new_addr);

 private:
  Runtime();
  static void unlock_after_fork();
  // Whether a mapped page still carries `key` (locked).
  bool key_in_use(int key);
  // pkey_mprotect with key -1 (locked): each page keeps its key or vkey.
  // `end` is start + len rounded up to a page.
  int protect_keeping_tags(std::uintptr_t start, std::uintptr_t end, std::size_t len, int prot);
  // Bounded spin for the lock from a signal handler; false if not taken.
  bool lock_from_signal_handler() noexcept;
  void update_tagged_count() noexcept { g_tagged_ranges.store(ranges_.size(), std::memory_order_release); }

  std::unique_ptr<backend::Backend> backend_;
  bool per_thread_rights_ = false;  // backend has PKEYS_CAP_PER_THREAD_RIGHTS
  std::string reason_;
  mutable std::mutex mu_;  // guards ranges_, key allocation, emulated rights
  RangeRegistry ranges_;  // keys' ranges and vkeys' ranges (is_vkey_tag)
  std::unique_ptr<VKeys> vkeys_;
  std::atomic<std::uint64_t> allocated_{1};  // bit k: key k allocated; key 0 always
  char labels_[kKeyLimit][64] = {};          // guarded by mu_
  int execute_only_key_ = -1;                // guarded by mu_
};

}  // namespace pkeys::core
