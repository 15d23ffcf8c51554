// SPDX-License-Identifier: MIT
// VKeyCache: the hardware keys that carry cached vkeys, on a backend with
// per-thread rights.
//
// Slots hold hardware keys pkeys allocated itself; a vkey that holds one
// is pinned by each thread that has it open (lock-free) and evicted, least
// recently used first, only when no thread has it open. Eviction retags
// its ranges to key 0 with page protections for its base rights (the
// address space's enforcement loop), so protection never lapses. Loading
// gives every thread the vkey's base rights on the slot's key (one
// set_rights_in), then retags its ranges to that key.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>

#include "backend/backend.hpp"
#include "core/address_space.hpp"
#include "core/vkey_table.hpp"

namespace pkeys::core {

struct VKeyStats {
  std::uint64_t hits = 0, misses = 0, evictions = 0;
  std::uint64_t live = 0;   // vkeys in existence
  unsigned pinned = 0;      // cached vkeys open in some thread
  unsigned cached = 0;      // vkeys holding a hardware key
  unsigned capacity = 0;    // most hardware keys the cache may hold
  unsigned hardware_keys = 0;  // hardware keys it holds now
};

class VKeyCache {
 public:
  VKeyCache(backend::Backend& backend, AddressSpace& space, const VKeyTable& table) noexcept;

  // Lock-free: pins `v` if it is pinnable (a hit, counted in its uses).
  // False otherwise.
  static bool try_pin(VKeyRecord& v) noexcept {
    std::uint64_t s = v.state.load(std::memory_order_acquire);
    while (VKeyRecord::pinnable(s))
      if (v.state.compare_exchange_weak(s, s + VKeyRecord::kPinAndUse, std::memory_order_acq_rel)) return true;
    return false;
  }
  // Takes the lock: pins `v`, loading it into a free or evicted slot.
  // -EINVAL (destroyed meanwhile), -EBUSY (every slot pinned), or the
  // backend's error.
  int pin(int vkey, VKeyRecord& v);
  static void unpin(VKeyRecord& v) noexcept { v.state.fetch_sub(1, std::memory_order_release); }
  // The hardware key of a slot. Under the lock.
  int hardware_key(int slot) const noexcept { return slots_[static_cast<std::size_t>(slot)].hw_key; }

  // --- under the lock ----------------------------------------------------
  // Evicts the vkey in `slot`: -EAGAIN when a thread pinned it meanwhile.
  int evict_locked(int slot);
  // The vkey in `slot` was destroyed, its state last `last_state`: the
  // slot is free.
  void drop_locked(int slot, std::uint64_t last_state) noexcept;
  // Gives a cached hardware key back to the backend: a free slot's, else
  // the least recently used idle vkey's (evicted first). False when every
  // key the cache holds is pinned, or it holds none.
  bool give_back_key_locked();
  int vkey_of_hardware_key_locked(int hw_key) const noexcept;
  void stats_locked(VKeyStats& st) const noexcept;

  // Takes the lock: holds at most `n` hardware keys from now on.
  int set_capacity(int n);
  // Bit k set when the cache holds hardware key k. Signal-safe.
  std::uint64_t hardware_key_mask() const noexcept { return hw_mask_.load(std::memory_order_acquire); }

 private:
  struct Slot {
    int hw_key = -1;    // -1: holds no key (given back)
    int vkey = 0;       // 0: free
    int baseline = -1;  // rights every thread outside begin holds; -1 unknown
    // Recency: the vkey's uses when the cache last looked, and the miss
    // count (clock_) when it last saw them change.
    std::uint32_t uses_seen = 0;
    std::uint64_t last_use = 0;
  };
  // Recency for eviction, from the uses the begins counted: a vkey used
  // since the cache last looked (at the last miss, or any other choice of
  // a victim) is stamped with the miss count now, so that a vkey used since
  // the last miss is never evicted before one that was not. The uses seen
  // go to the hit count. (A vkey used exactly a multiple of 2^32 times
  // between two looks would look unused: its uses wrap.)
  void observe_uses_locked() noexcept;
  // The uses of the vkey in `slot` not yet counted as hits, given its state.
  std::uint32_t unseen_uses(int slot, std::uint64_t state) const noexcept {
    return VKeyRecord::uses_of(state) - slots_[static_cast<std::size_t>(slot)].uses_seen;
  }
  int evict_lru_locked();  // the freed slot, or -errno
  // Stops new pins on the vkey in `slot` (clears kPinnable): false when it
  // is pinned or claimed already.
  bool claim_locked(int slot) noexcept;
  // Evicts the claimed vkey in `slot`.
  void evict_claimed_locked(int slot) noexcept;
  // Claims `n` slots no thread can pin: free ones first, then the least
  // recently used idle vkeys'. All or none: false (nothing changed) when
  // fewer are idle. Their indices go to `out`.
  bool claim_idle_locked(int n, int* out) noexcept;
  // Gives the key of a free or claimed slot back to the backend.
  void release_slot_locked(int slot) noexcept;
  int load_locked(int vkey, VKeyRecord& v, int slot);
  std::uint64_t clock_ = 0;  // misses; under the lock

  backend::Backend& backend_;
  AddressSpace& space_;
  const VKeyTable& table_;
  std::array<Slot, 16> slots_{};  // guarded by the lock; hw_key read lock-free once pinned
  int slot_count_ = 0;  // slots ever used, holes (no key) included
  int held_ = 0;        // hardware keys held
  int capacity_;
  std::atomic<std::uint64_t> hw_mask_{0};
  // Hits: uses seen by observe_uses_locked or at an eviction or destroy;
  // stats add those not seen yet. Under the lock, like the others.
  std::uint64_t hits_ = 0, misses_ = 0, evictions_ = 0;
};

}  // namespace pkeys::core
