// SPDX-License-Identifier: MIT
// VKeyTable: the virtual key ids and their records.
//
// Records live in chunks that are never freed, so a lock-free reader (a
// thread's begin) can look a vkey up while another thread creates or
// destroys vkeys under the address space's lock.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <utility>
#include <vector>

namespace pkeys::core {

// One vkey. `state` packs what lock-free readers need:
// pins (bits 0-31) | hardware-cache slot + 1 (bits 32-39, 0: not cached) |
// kBusy (no new pins: being evicted) | kLive | the slot's hardware key
// (bits 48-55, while cached).
struct alignas(64) VKeyRecord {  // a cache line: an index is a shift, no false sharing
  static constexpr std::uint64_t kPinMask = 0xffffffffull;
  static constexpr int kSlotShift = 32;
  static constexpr std::uint64_t kSlotMask = 0xffull << kSlotShift;
  static constexpr std::uint64_t kBusy = 1ull << 40;
  static constexpr std::uint64_t kLive = 1ull << 41;
  static constexpr int kHwKeyShift = 48;

  // Whether a begin may pin a vkey in `state` without the lock: live, not
  // being evicted, holding a slot.
  static bool pinnable(std::uint64_t state) noexcept {
    // Bits 32-41 as one number: live (0x200), not busy (0x100), slot 1..255.
    static_assert(kLive >> kSlotShift == 0x200 && kBusy >> kSlotShift == 0x100 && kSlotMask >> kSlotShift == 0xff);
    return static_cast<std::uint32_t>((state >> kSlotShift) & 0x3ff) - 0x201u <= 0xfeu;
  }
  static int hw_key_of(std::uint64_t state) noexcept { return static_cast<int>((state >> kHwKeyShift) & 0xff); }

  std::atomic<std::uint64_t> state{0};
  std::atomic<std::uint64_t> last_use{0};  // the cache's LRU clock
  unsigned base = 0;  // process-wide rights; guarded by the lock
  // While cached: the rights switch's masks for its hardware key (the bits
  // it leaves alone, its access-disable bit), set before the state that
  // publishes the slot, read by begin once pinned.
  std::uint32_t keep = ~0u;
  std::uint32_t access_bit = 0;
  // Emulation: the begins not yet ended, oldest first, as (sequence,
  // rights); the newest one's rights hold. Guarded by the lock.
  std::vector<std::pair<std::uint64_t, unsigned>> opens;

  static int slot_of(std::uint64_t state) noexcept { return static_cast<int>((state & kSlotMask) >> kSlotShift) - 1; }
  int slot() const noexcept { return slot_of(state.load(std::memory_order_acquire)); }
  bool pinned() const noexcept { return (state.load(std::memory_order_acquire) & kPinMask) != 0; }
};

class VKeyTable {
 public:
  static constexpr int kMaxVKeys = 1 << 22;

  // The live record of `vkey`, or null. Lock-free.
  VKeyRecord* find(int vkey) const noexcept;
  // The record `vkey` would have, live or not, or null. Lock-free; the
  // caller checks the state.
  VKeyRecord* record_of(int vkey) const noexcept {
    if (static_cast<unsigned>(vkey) - 1u >= static_cast<unsigned>(kMaxVKeys - 1)) return nullptr;  // 1..kMaxVKeys-1
    VKeyRecord* chunk = chunks_[static_cast<unsigned>(vkey) / kChunk].load(std::memory_order_acquire);
    return chunk ? &chunk[static_cast<unsigned>(vkey) % kChunk] : nullptr;
  }
  // Under the lock: a new vkey with base `rights`, or -ENOSPC.
  int create_locked(unsigned rights);
  // Under the lock: `vkey`'s id is free again; -EBUSY (nothing changed)
  // when a thread pinned it, lock-free, since the caller looked.
  int destroy_locked(int vkey, VKeyRecord& v);
  std::uint64_t live_locked() const noexcept { return live_; }
  // Under the lock: f(id, record) for every live vkey.
  template <class F>
  void for_each_live_locked(F&& f) const {
    for (int id = 1; id < next_id_; ++id)
      if (VKeyRecord* v = record_of(id); v && (v->state.load(std::memory_order_acquire) & VKeyRecord::kLive)) f(id, *v);
  }

 private:
  static constexpr int kChunk = 4096;
  VKeyRecord& record_for_new(int vkey);

  std::array<std::atomic<VKeyRecord*>, kMaxVKeys / kChunk> chunks_{};
  int next_id_ = 1;
  std::vector<int> free_ids_;
  std::uint64_t live_ = 0;
};

}  // namespace pkeys::core
