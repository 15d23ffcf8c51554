// SPDX-License-Identifier: MIT
// VKeyTable: the virtual key ids and their records.
//
// The records form one flat array in pkeys' own memory (one reservation,
// made at the first create, never freed or moved), so that a lock-free
// reader (a thread's begin) finds a vkey's record with one compare and an
// index while another thread creates or destroys vkeys under the address
// space's lock. The array and the count of ids handed out so far are
// process-wide (constant-initialised globals, read by the inline begin
// without a Runtime): there is one table per process, the Runtime's.
#pragma once

#include <atomic>
#include <cstdint>
#include <utility>
#include <vector>

namespace pkeys::core {

// One vkey. `state` packs what lock-free readers need:
// pins (bits 0-27) | kLive | kPinnable | uses (bits 30-63).
// kPinnable: live, cached, and not being evicted; a begin pins only then,
// by a compare-and-swap that adds one pin and one use at once (kPinAndUse,
// an immediate of 32 bits). Uses count every pin of a cached vkey (hits;
// the load's own is a miss): the cache reads their low 32 bits under the
// lock for its recency order and its hit count. They wrap off the word's
// top, touching no other field.
// Pins cannot overflow: at most kMaxNesting (64) per thread, and a process
// has fewer than 2^22 threads (the kernel's PID_MAX_LIMIT).
struct alignas(64) VKeyRecord {  // a cache line: an index is a shift, no false sharing
  static constexpr std::uint64_t kPinMask = (1ull << 28) - 1;
  static constexpr std::uint64_t kLive = 1ull << 28;
  static constexpr std::uint64_t kPinnable = 1ull << 29;
  static constexpr int kUsesShift = 30;
  static constexpr std::uint64_t kPinAndUse = 1 + (1ull << kUsesShift);
  static_assert(kPinAndUse < (1ull << 31), "one instruction's immediate");

  static bool pinnable(std::uint64_t state) noexcept { return (state & kPinnable) != 0; }
  static std::uint32_t uses_of(std::uint64_t state) noexcept { return static_cast<std::uint32_t>(state >> kUsesShift); }

  std::atomic<std::uint64_t> state{0};
  // While cached: the rights switch's masks for its hardware key (the bits
  // it leaves alone, its access-disable bit, and the key's own bits), set
  // before the state that makes it pinnable, read by begin and end once
  // pinned.
  std::uint32_t keep = ~0u;
  std::uint32_t access_bit = 0;
  std::uint32_t key_bits = 0;
  unsigned base = 0;  // process-wide rights; guarded by the lock
  int slot = -1;      // the cache slot it holds, -1 none; guarded by the lock
  // Emulation: the begins not yet ended, oldest first, as (sequence,
  // rights); the newest one's rights hold. Guarded by the lock.
  std::vector<std::pair<std::uint64_t, unsigned>> opens;

  bool pinned() const noexcept { return (state.load(std::memory_order_acquire) & kPinMask) != 0; }
};
static_assert(sizeof(VKeyRecord) == 64);

// The process's records, for lock-free lookups (VKeyTable::record_of and
// the inline begin): ids below g_vkey_id_limit have a constructed record at
// g_vkey_records[id] (id 0's is never live). The limit is 0 until the first
// create and grows with a release store after each new record is ready.
extern constinit VKeyRecord* g_vkey_records [[gnu::visibility("hidden")]];
extern constinit std::atomic<std::uint32_t> g_vkey_id_limit [[gnu::visibility("hidden")]];

// Whether `id` is below g_vkey_id_limit (then its record is there), with
// acquire order. One compare with the limit in memory: an atomic load would
// take an instruction more (compilers do not fold it into the compare).
// On x86 an aligned load is atomic and ordered like an acquire; the asm's
// memory clobber keeps the compiler from moving the record's loads above
// it. ThreadSanitizer sees no asm: it gets the plain atomic load.
[[gnu::always_inline]] inline bool below_vkey_id_limit(std::uint32_t id) noexcept {
#if defined(__SANITIZE_THREAD__) || !defined(__x86_64__)
  return id < g_vkey_id_limit.load(std::memory_order_acquire);
#else
  static_assert(sizeof(g_vkey_id_limit) == sizeof(std::uint32_t));
  bool below;
  __asm__ volatile("cmpl %[limit], %[id]" : "=@ccb"(below) : [id] "r"(id), [limit] "m"(g_vkey_id_limit) : "memory");
  return below;
#endif
}

class VKeyTable {
 public:
  // Ids 1..kMaxVKeys-1. The flat reservation is kMaxVKeys * 64 bytes of
  // address space (64 MiB); only the records of ids in use take memory.
  static constexpr int kMaxVKeys = 1 << 20;

  // The record `vkey` would have, live or not, or null. Lock-free; the
  // caller checks the state.
  static VKeyRecord* record_of(int vkey) noexcept {
    if (!below_vkey_id_limit(static_cast<std::uint32_t>(vkey))) return nullptr;
    return g_vkey_records + static_cast<std::uint32_t>(vkey);
  }
  // The live record of `vkey`, or null. Lock-free.
  static VKeyRecord* find(int vkey) noexcept {
    VKeyRecord* v = record_of(vkey);
    return v && (v->state.load(std::memory_order_acquire) & VKeyRecord::kLive) ? v : nullptr;
  }
  // Under the lock: a new vkey with base `rights`, or -ENOSPC (-ENOMEM when
  // the records' reservation failed).
  int create_locked(unsigned rights);
  // Under the lock: `vkey`'s id is free again; -EBUSY (nothing changed)
  // when a thread pinned it, lock-free, since the caller looked. Its last
  // state goes to `last_state` (for the cache's count of its uses).
  int destroy_locked(int vkey, VKeyRecord& v, std::uint64_t* last_state);
  std::uint64_t live_locked() const noexcept { return live_; }
  // Under the lock: f(id, record) for every live vkey.
  template <class F>
  void for_each_live_locked(F&& f) const {
    for (int id = 1; id < next_id_; ++id)
      if (VKeyRecord* v = record_of(id); v && (v->state.load(std::memory_order_acquire) & VKeyRecord::kLive)) f(id, *v);
  }

 private:
  int next_id_ = 1;
  std::vector<int> free_ids_;
  std::uint64_t live_ = 0;
};

}  // namespace pkeys::core
