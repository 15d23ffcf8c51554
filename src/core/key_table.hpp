// SPDX-License-Identifier: MIT
// KeyTable: which protection keys the program holds, in constant-
// initialised state the hot path and signal handlers read without
// constructing anything.
//
// It knows which keys are allocated, whether rights live in a per-thread
// register (no lock to change them), each key's label, pkeys' own
// execute-only key, and the quarantined numbers: freed by the program
// while pages still carried them, so held back from pkey_alloc until no
// page does. Allocation and freeing live here too; they run under the
// address space's lock, since a free must know whether a page carries the
// key.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "backend/backend.hpp"
#include "backend/register_rights.hpp"

namespace pkeys::core {

// Gives back a hardware key held by pkeys itself (the vkey cache) so that
// the program can have it. False when none can be.
class KeyDonor {
 public:
  virtual bool give_back_key_locked() = 0;

 protected:
  ~KeyDonor() = default;
};

constexpr bool valid_rights(unsigned rights) noexcept { return (rights & ~0x3u) == 0u; }  // PKEYS_RIGHTS_MASK

// What pkey_free does with a key that mapped pages still carry
// (PKEYS_FREE_*): free it and quarantine the number, or refuse (EBUSY).
enum class FreeMode { quarantine = 0, strict = 1 };
// From PKEYS_FREE=strict|quarantine at first use (unset or empty:
// quarantine); any other value means strict, reported once on stderr.
FreeMode free_mode() noexcept;
void set_free_mode(FreeMode mode) noexcept;

class KeyTable {
 public:
  static constexpr int kKeyLimit = 64;  // key numbers the table can hold
  static constexpr unsigned kAllocAllThreads = 0x40000000u;  // PKEYS_ALLOC_ALL_THREADS

  constexpr KeyTable() = default;

  // --- lock-free, signal-safe ------------------------------------------
  bool is_allocated(int key) const noexcept {
    return key >= 0 && key < kKeyLimit && (allocated_.load(std::memory_order_acquire) >> key) & 1;
  }
  std::uint64_t allocated_mask() const noexcept { return allocated_.load(std::memory_order_acquire); }
  // The same, as a read-modify-write: the newest value, and (a locked
  // instruction on x86) a full barrier after the caller's earlier stores.
  std::uint64_t allocated_mask_latest() noexcept { return allocated_.fetch_or(0, std::memory_order_seq_cst); }
  // Allocations so far (wrapping), and the keys allocated after the
  // moment allocations() returned `epoch`: a rights restore must not give
  // a number's new owner what its old owner had.
  std::uint32_t allocations() const noexcept { return allocations_.load(std::memory_order_acquire); }
  std::uint64_t allocated_since(std::uint32_t epoch) const noexcept {
    std::uint64_t mask = 0;
    for (int k = 0; k < kKeyLimit; ++k)
      if (static_cast<std::int32_t>(stamps_[k].load(std::memory_order_acquire) - epoch) > 0) mask |= std::uint64_t{1} << k;
    return mask;
  }
  // Bit k: number k is quarantined (not the program's; pages carry it).
  std::uint64_t quarantined_mask() const noexcept { return quarantined_.load(std::memory_order_acquire); }
  // Whether rights live in a per-thread register, changed without a lock.
  bool per_thread_rights() const noexcept { return per_thread_rights_.load(std::memory_order_relaxed); }
  void set_per_thread_rights(bool on) noexcept { per_thread_rights_.store(on, std::memory_order_relaxed); }
  // The keys whose rights are the calling thread's rights register,
  // switched inline with no lock (the C ABI's hot path:
  // backend/register_rights.hpp), each as its two bits in the register
  // (3 << 2k): clear where key k (1..15) is the program's, set elsewhere.
  // All set unless the backend keeps rights in such a register
  // (set_register_rights). The inline switch tests the key's bits inside its
  // restartable block (a plain x86 load is acquire).
  const std::uint32_t* register_fields_not_held_word() const noexcept {
    static_assert(sizeof(register_fields_not_held_) == sizeof(std::uint32_t) &&
                  std::atomic<std::uint32_t>::is_always_lock_free);
    return reinterpret_cast<const std::uint32_t*>(&register_fields_not_held_);
  }
  // Keys below this number may take pkey_set's and pkey_get's inline path:
  // kRegisterKeys (16) on a backend with rights in the register whose CPU
  // runs it (BMI1; set_register_rights), else 0. Compared by that path
  // itself, as its range check.
  const std::uint32_t* owned_switch_limit_word() const noexcept {
    static_assert(sizeof(owned_switch_limit_) == sizeof(std::uint32_t) &&
                  std::atomic<std::uint32_t>::is_always_lock_free);
    return reinterpret_cast<const std::uint32_t*>(&owned_switch_limit_);
  }
  // Set once, before any key is published.
  void set_register_rights(bool on, bool owned_switch_inline) noexcept {
    register_rights_ = on;
    owned_switch_limit_.store(on && owned_switch_inline ? static_cast<std::uint32_t>(backend::kRegisterKeys) : 0u, std::memory_order_release);
  }

  // --- under the address space's lock -----------------------------------
  // Allocating is two steps, so that giving every thread the rights
  // (PKEY_ALLOC_ALL_THREADS) can wait for them without the lock: a key
  // from the backend with `rights` for the caller, asking `donor` for a
  // hardware key when none is free; then, once it is ready, the program's.
  int acquire_locked(backend::Backend& backend, KeyDonor& donor, unsigned rights);
  void publish_locked(int key) noexcept;
  // Freeing too: the program's key is no longer allocated (the caller
  // checked that it was, and whether a page carries it). Then the caller
  // either releases the number to the backend, which resets it in every
  // thread, or, when pages still carry it, resets it and quarantines it:
  // the backend keeps holding the number until end_quarantine_locked.
  void unpublish_locked(int key) noexcept;
  void quarantine_locked(int key) noexcept;
  void end_quarantine_locked(int key) noexcept;
  // pkeys' own key for execute-only memory, acquired at first use: every
  // thread holds it access-disabled.
  int execute_only_key_locked(backend::Backend& backend, KeyDonor& donor);
  bool execute_only_key_held_locked() const noexcept { return execute_only_key_ >= 0; }
  // A first execute-only call that failed: pkeys no longer holds the key.
  // Returns it for the caller to release to the backend, without the lock.
  int forget_execute_only_key_locked(backend::Backend& backend) noexcept;

  int set_label_locked(int key, const char* label) noexcept;
  int get_label_locked(int key, char* buf, std::size_t len) const noexcept;
  // The label's storage (kLabelSize bytes, terminated); key 0..kKeyLimit-1.
  static constexpr std::size_t kLabelSize = 64;
  const char* label_locked(int key) const noexcept { return labels_[key]; }

 private:
  static int acquire(backend::Backend& backend, KeyDonor& donor, unsigned rights);

  std::atomic<std::uint64_t> allocated_{1};  // bit k: key k allocated; key 0 always
  std::atomic<std::uint32_t> allocations_{0};
  std::atomic<std::uint32_t> stamps_[kKeyLimit] = {};  // allocations() when key k was last allocated
  std::atomic<std::uint64_t> quarantined_{0};
  std::atomic<bool> per_thread_rights_{false};
  std::atomic<std::uint32_t> register_fields_not_held_{~0u};
  std::atomic<std::uint32_t> owned_switch_limit_{0};
  bool register_rights_ = false;  // set once, before any key is published
  char labels_[kKeyLimit][kLabelSize] = {};
  int execute_only_key_ = -1;
};

// The process's table: constant-initialised, never destroyed.
// Hidden: the C ABI's hot path reads it directly, not through the GOT.
extern constinit KeyTable g_key_table [[gnu::visibility("hidden")]];

}  // namespace pkeys::core
