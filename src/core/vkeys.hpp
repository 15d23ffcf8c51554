// SPDX-License-Identifier: MIT
// VKeys: any number of virtual protection keys over the hardware's few.
//
// A virtual key (vkey) tags ranges and has process-wide rights (its
// "base"); a thread opens it with begin(vkey, rights) and closes it with
// end. An open vkey needs a hardware key: pkeys keeps a cache of hardware
// keys it allocates itself (never a number pkey_alloc handed out, and it
// gives an unpinned one back when pkey_alloc would otherwise fail). A vkey
// that holds one switches at hardware speed: begin and end only pin it and
// write the calling thread's PKRU, with no lock. When the cache is full,
// the least recently used vkey that no thread has open is evicted: its
// ranges are retagged to key 0 with page protections that enforce its
// base rights, so protection never lapses. A vkey open in any thread is
// pinned and never evicted; with every cached key pinned, begin fails with
// EBUSY and changes nothing.
//
// Every thread outside begin/end holds a cached vkey's base rights on its
// hardware key: a slot keeps the base its threads hold, and loading a vkey
// with another base costs one pkey_set_all. On the emulated backend there
// is no cache: every vkey is enforced by mprotect, and begin sets its
// rights process-wide while any thread has it open.
#pragma once

#include <signal.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "backend/backend.hpp"
#include "core/range_registry.hpp"

namespace pkeys::core {

// Registry tags of vkey ranges: kVKeyTagBase + vkey id, apart from keys.
constexpr int kVKeyTagBase = 1 << 24;
constexpr bool is_vkey_tag(int tag) { return tag >= kVKeyTagBase; }

struct VKeyStats {
  std::uint64_t hits = 0, misses = 0, evictions = 0;
  std::uint64_t live = 0;   // vkeys in existence
  unsigned pinned = 0;      // cached vkeys open in some thread
  unsigned cached = 0;      // vkeys holding a hardware key
  unsigned capacity = 0;    // most hardware keys the cache may hold
  unsigned hardware_keys = 0;  // hardware keys it holds now
};

class VKeys {
 public:
  static constexpr int kMaxVKeys = 1 << 22;
  static constexpr int kMaxNesting = 64;  // open vkeys per thread

  // `mu` and `ranges` are the Runtime's: the lock guards the registry.
  VKeys(backend::Backend& backend, RangeRegistry& ranges, std::mutex& mu);

  int create(unsigned rights);
  int destroy(int vkey);
  int protect(std::uintptr_t start, std::size_t len, int prot, int vkey);
  int begin(int vkey, unsigned rights);
  int end(int vkey);
  int set(int vkey, unsigned rights);
  int get(int vkey) const;
  VKeyStats stats() const;
  int set_capacity(int n);

  // Under the Runtime's lock: a plain mprotect over part of a vkey range.
  int reprotect_locked(const TaggedRange& piece, int prot);
  // Under the Runtime's lock: frees a cached hardware key no vkey has
  // open, so that pkey_alloc can have it. False if none.
  bool surrender_key_locked();
  // Bit k set when the cache holds hardware key k. Signal-safe.
  std::uint64_t hardware_key_mask() const noexcept { return hw_mask_.load(std::memory_order_acquire); }
  // The vkey behind a SIGSEGV (registry locked by the caller), or -1.
  int fault_vkey_locked(const siginfo_t& si) const noexcept;

 private:
  // state: pins (bits 0-31) | slot + 1 (bits 32-39, 0: not cached) |
  // kBusy (no new pins: being evicted) | kLive.
  static constexpr std::uint64_t kPinMask = 0xffffffffull;
  static constexpr int kSlotShift = 32;
  static constexpr std::uint64_t kSlotMask = 0xffull << kSlotShift;
  static constexpr std::uint64_t kBusy = 1ull << 40;
  static constexpr std::uint64_t kLive = 1ull << 41;

  struct VKey {
    std::atomic<std::uint64_t> state{0};
    std::atomic<std::uint64_t> last_use{0};
    unsigned base = 0;  // process-wide rights; guarded by mu_
    // Emulation: the begins not yet ended, oldest first, as (sequence,
    // rights); the newest one's rights hold. Guarded by mu_.
    std::vector<std::pair<std::uint64_t, unsigned>> opens;
  };
  struct Slot {
    int hw_key = -1;
    int vkey = 0;  // 0: free
    int baseline = -1;  // rights every thread outside begin holds; -1 unknown
  };
  static constexpr int kChunk = 4096;

  VKey* find(int vkey) const noexcept;
  VKey& slot_for_new(int vkey);
  int slot_of(std::uint64_t state) const { return static_cast<int>((state & kSlotMask) >> kSlotShift) - 1; }
  bool try_pin(VKey& v, int* slot) noexcept;
  int begin_slow(int vkey, VKey& v, int* slot);
  int evict_lru_locked();  // the freed slot, or -errno
  int evict_locked(int slot);
  bool release_last_slot_locked();
  int load_locked(int vkey, VKey& v, int slot);
  // Retags every range of `vkey` to key 0 with page protections enforcing
  // `rights`; each call switches a range atomically. First error but ENOMEM.
  int enforce_locked(int vkey, unsigned rights);
  // Emulation: the rights in force now.
  static unsigned current_rights(const VKey& v) { return v.opens.empty() ? v.base : v.opens.back().second; }
  int tag(int vkey) const { return kVKeyTagBase + vkey; }

  backend::Backend& backend_;
  RangeRegistry& ranges_;
  std::mutex& mu_;
  const bool hardware_;
  std::array<std::atomic<VKey*>, kMaxVKeys / kChunk> chunks_{};
  int next_id_ = 1;             // guarded by mu_
  std::vector<int> free_ids_;   // guarded by mu_
  std::uint64_t live_ = 0;      // guarded by mu_
  std::array<Slot, 16> slots_{};  // guarded by mu_; hw_key read lock-free once pinned
  int slot_count_ = 0;
  std::uint64_t open_sequence_ = 0;  // guarded by mu_
  std::atomic<std::uint64_t> hw_mask_{0};
  int capacity_;
  std::atomic<std::uint64_t> clock_{0};
  struct alignas(64) Counter {
    std::atomic<std::uint64_t> n{0};
  };
  mutable std::array<Counter, 32> hits_{};  // sharded by thread
  std::atomic<std::uint64_t> misses_{0}, evictions_{0};
};

}  // namespace pkeys::core
