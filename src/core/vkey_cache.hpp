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

  // Lock-free: pins `v` if it holds a slot (a hit), giving its hardware
  // key. False otherwise. The caller counts the hit.
  bool try_pin(VKeyRecord& v, int* hw_key) noexcept {
    std::uint64_t s = v.state.load(std::memory_order_acquire);
    while (VKeyRecord::pinnable(s))
      if (v.state.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel)) {
        *hw_key = VKeyRecord::hw_key_of(s);
        return true;
      }
    return false;
  }
  // Takes the lock: pins `v`, loading it into a free or evicted slot.
  // -EINVAL (destroyed meanwhile), -EBUSY (every slot pinned), or the
  // backend's error.
  int pin(int vkey, VKeyRecord& v, int* hw_key);
  static void unpin(VKeyRecord& v) noexcept { v.state.fetch_sub(1, std::memory_order_release); }
  // The hardware key of a slot some thread has pinned. Lock-free.
  int hardware_key(int slot) const noexcept { return slots_[static_cast<std::size_t>(slot)].hw_key; }
  // Recency for eviction: the number of misses so far, so that a vkey used
  // since the last miss is never evicted before one that was not. Two
  // plain memory operations, no shared write.
  void touch(VKeyRecord& v) const noexcept {
    v.last_use.store(clock_.load(std::memory_order_relaxed), std::memory_order_relaxed);
  }
  // The hit counter a new thread counts its hits in (a shard of its own,
  // so begin stays free of shared read-modify-writes where threads are few).
  std::atomic<std::uint64_t>* hit_counter_for_thread() noexcept {
    return &hits_[next_shard_.fetch_add(1, std::memory_order_relaxed) % hits_.size()].n;
  }

  // --- under the lock ----------------------------------------------------
  // Evicts the vkey in `slot`: -EAGAIN when a thread pinned it meanwhile.
  int evict_locked(int slot);
  // The vkey in `slot` was destroyed: the slot is free.
  void drop_locked(int slot) noexcept { slots_[static_cast<std::size_t>(slot)].vkey = 0; }
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
  };
  int evict_lru_locked();  // the freed slot, or -errno
  // Stops new pins on the vkey in `slot` (kBusy): false when it is pinned.
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
  std::atomic<std::size_t> next_shard_{0};
  std::atomic<std::uint64_t> clock_{0};  // misses, under the lock; read lock-free

  backend::Backend& backend_;
  AddressSpace& space_;
  const VKeyTable& table_;
  std::array<Slot, 16> slots_{};  // guarded by the lock; hw_key read lock-free once pinned
  int slot_count_ = 0;  // slots ever used, holes (no key) included
  int held_ = 0;        // hardware keys held
  int capacity_;
  std::atomic<std::uint64_t> hw_mask_{0};
  struct alignas(64) Counter {
    std::atomic<std::uint64_t> n{0};
  };
  std::array<Counter, 32> hits_{};  // sharded by thread
  std::atomic<std::uint64_t> misses_{0}, evictions_{0};
};

}  // namespace pkeys::core
