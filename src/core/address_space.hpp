// SPDX-License-Identifier: MIT
// AddressSpace: the core's owner of the address space.
//
// One unit owns the lock, the range registry (which ranges carry which
// Tag, with the protection the program asked for) and the count of tagged
// ranges the mmap family reads. It changes page protections (protect, the
// mmap family), answers "does a page still carry this key", and holds the
// one loop that enforces rights with page protections, used both by the
// emulated backend (through backend::PageProtections) and by vkey eviction.
//
// The lock guards the registry, key allocation (key_table.hpp), emulated
// rights and the vkey cache. Methods named *_locked expect it held.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <vector>

#include "backend/backend.hpp"
#include "core/range_registry.hpp"
#include "core/tag.hpp"
#include "os/proc_maps.hpp"

namespace pkeys::core {

// How a piece of a vkey's range is protected now: the vkey room's part in
// changing pages (a cached hardware key, or page protections for its
// rights). Called with the lock held.
class VKeyPieces {
 public:
  virtual int protect_piece_locked(int vkey, std::uintptr_t start, std::size_t len, int prot) noexcept = 0;

 protected:
  ~VKeyPieces() = default;
};

class AddressSpace final : public backend::PageProtections {
 public:
  // `backend` may be null: then no page carries a key of pkeys'.
  explicit AddressSpace(backend::Backend* backend) noexcept;
  void attach_vkeys(VKeyPieces& vkeys) noexcept { vkeys_ = &vkeys; }

  // The lock (BasicLockable: std::lock_guard<AddressSpace> works).
  void lock() noexcept;
  void unlock() noexcept;
  // From a signal handler: false at once when this thread holds the lock
  // or is taking it (the interrupted code, or a handler this one
  // interrupted), else after at most ~10 ms waiting for another thread.
  bool lock_from_signal_handler() noexcept;
  // Whether the calling thread holds (or is taking) the lock: an
  // interposed call from inside pkeys (the program's malloc calling mmap
  // while pkeys allocates under the lock) must not take it again.
  static bool held_by_this_thread() noexcept;

  // Whether any range is tagged; lets the mmap family skip all bookkeeping.
  // Constant-initialised: readable before anything is constructed.
  static bool any_tagged() noexcept { return tagged_ranges_.load(std::memory_order_acquire) != 0; }

  // --- page protections, under the lock; 0 or -errno, nothing changed on
  // failure --------------------------------------------------------------
  // pkey_mprotect of [start, start+len) to carry `tag` (untagged: key 0).
  int protect_locked(std::uintptr_t start, std::size_t len, int prot, Tag tag);
  // pkey_mprotect with key -1: each page keeps its key or vkey.
  int protect_keeping_tags_locked(std::uintptr_t start, std::size_t len, int prot);
  // Pages under a hardware key of pkeys' own (execute-only): no longer a
  // key's or a vkey's in the records.
  int protect_untracked_locked(std::uintptr_t start, std::size_t len, int prot, int hw_key);
  // Every range of `tag` retagged to key 0 with the page protection that
  // enforces `rights` (adjacent ranges in one call); each call switches a
  // range atomically, so protection never lapses. The first error but
  // ENOMEM (a range unmapped behind pkeys' back is stale, not a failure).
  // `current`: the rights the pages are protected for now. Pages whose
  // protection is not that (unmapped and mapped again behind pkeys' back)
  // are someone else's: their records go and the pages stay as they are.
  // kUnchecked (pages mixed after a failed call) trusts the records.
  static constexpr int kUnchecked = -1;
  int enforce_locked(Tag tag, unsigned rights, int current) noexcept;
  // backend::PageProtections: the emulated backend's rights of `key`.
  int enforce(int key, unsigned rights, int current) noexcept override {
    return enforce_locked(Tag::key(key), rights, current);
  }

  // --- the records, under the lock ---------------------------------------
  // Whether a mapped page still carries `key`: the kernel's word where it
  // keeps keys, else the records, pruned of ranges unmapped behind pkeys'
  // back.
  bool key_in_use_locked(int key);
  // Whether a range of `tag` is still mapped (records pruned as above).
  bool tag_in_use_locked(Tag tag);
  void forget_locked(Tag tag);
  std::optional<TaggedRange> find_locked(std::uintptr_t addr) const { return ranges_.find(addr); }
  template <class F>
  void for_each_of_locked(Tag tag, F&& f) const {
    ranges_.for_each_of(tag, static_cast<F&&>(f));
  }
  // The recorded ranges (takes the lock).
  std::vector<TaggedRange> snapshot();

  // --- the mmap family (takes the lock) ----------------------------------
  long unmap(void* addr, std::size_t len);
  long map(void* addr, std::size_t len, int prot, int flags, int fd, long offset);
  long remap(void* old_addr, std::size_t old_len, std::size_t new_len, int flags, void* new_addr);

 private:
  // The protection of one piece of a range: its tag's way.
  int apply_locked(std::uintptr_t start, std::size_t len, int prot, Tag tag) noexcept;
  bool prune_unmapped_locked();  // false: the maps could not be read
  // Drops the records of `tag` whose pages the kernel does not protect
  // for `current` rights: replaced behind pkeys' back. Keeps every record
  // when the kernel cannot be asked (`quick_only`: cannot be asked with
  // one ioctl a range).
  void drop_replaced_locked(Tag tag, unsigned current, bool quick_only) noexcept;
  void note_changes_locked() noexcept;

  static constinit std::atomic<std::size_t> tagged_ranges_;
  backend::Backend* backend_;
  bool hardware_;  // the backend's pages keep their key under mprotect
  VKeyPieces* vkeys_ = nullptr;
  std::mutex mu_;
  RangeRegistry ranges_;
  os::SelfProtections kernel_;  // under the lock
};

}  // namespace pkeys::core
