// SPDX-License-Identifier: MIT
#include "core/vkey_cache.hpp"

#include <cerrno>
#include <cstdlib>
#include <mutex>

#include "arch/arch.hpp"
#include "pkeys/pkeys.h"

namespace pkeys::core {
namespace {

constexpr unsigned kNoAccess = PKEY_DISABLE_ACCESS;

int default_capacity(int max_keys) {
  int n = 8;
  if (const char* s = std::getenv("PKEYS_VKEY_CACHE")) n = std::atoi(s);
  if (n < 0) n = 0;
  return n < max_keys - 1 ? n : max_keys - 1;
}

}  // namespace

VKeyCache::VKeyCache(backend::Backend& backend, AddressSpace& space, const VKeyTable& table) noexcept
    : backend_(backend), space_(space), table_(table), capacity_(default_capacity(backend.max_keys())) {}

std::atomic<std::size_t> VKeyCache::next_shard_{0};

int VKeyCache::pin(int vkey, VKeyRecord& v, int* slot_out) {
  std::lock_guard lock(space_);
  for (;;) {
    if (!table_.find(vkey)) return -EINVAL;
    if (try_pin(v, slot_out)) return 0;  // loaded by another thread meanwhile
    int slot = -1;
    for (int i = 0; i < slot_count_ && slot < 0; ++i)
      if (slots_[static_cast<std::size_t>(i)].vkey == 0) slot = i;
    if (slot < 0 && slot_count_ < capacity_) {
      // The kernel gives the caller no access; every other thread had the
      // number reset to no access when it was last freed.
      const int hw = backend_.acquire_key(kNoAccess);
      if (hw > 0) {
        backend_.set_start_rights(hw, static_cast<int>(kNoAccess));
        slots_[static_cast<std::size_t>(slot_count_)] = Slot{hw, 0, static_cast<int>(kNoAccess)};
        hw_mask_.fetch_or(1ull << hw, std::memory_order_acq_rel);
        slot = slot_count_++;
      }
    }
    if (slot < 0) {
      slot = evict_lru_locked();
      if (slot == -EAGAIN) continue;  // a candidate got pinned: look again
      if (slot < 0) return slot;
    }
    if (int r = load_locked(vkey, v, slot); r < 0) return r;
    misses_.fetch_add(1, std::memory_order_relaxed);
    *slot_out = slot;
    return 0;
  }
}

int VKeyCache::evict_lru_locked() {
  int victim = -1;
  std::uint64_t oldest = ~0ull;
  for (int i = 0; i < slot_count_; ++i) {
    const int vk = slots_[static_cast<std::size_t>(i)].vkey;
    if (vk == 0) continue;
    VKeyRecord* v = table_.find(vk);
    if (!v || v->pinned()) continue;
    const std::uint64_t used = v->last_use.load(std::memory_order_relaxed);
    if (used <= oldest) {
      oldest = used;
      victim = i;
    }
  }
  if (victim < 0) return -EBUSY;  // every cached vkey is open somewhere
  if (int r = evict_locked(victim); r < 0) return r;
  return victim;
}

int VKeyCache::evict_locked(int slot) {
  Slot& sl = slots_[static_cast<std::size_t>(slot)];
  const int vkey = sl.vkey;
  VKeyRecord* v = table_.find(vkey);
  if (!v) return -EINVAL;
  // Stop new pins; fails if one came in since the caller looked.
  std::uint64_t s = v->state.load(std::memory_order_acquire);
  if ((s & VKeyRecord::kPinMask) != 0 ||
      !v->state.compare_exchange_strong(s, s | VKeyRecord::kBusy, std::memory_order_acq_rel))
    return -EAGAIN;
  // A range it cannot change was unmapped behind pkeys' back.
  (void)space_.enforce_locked(Tag::vkey(vkey), v->base);
  sl.vkey = 0;
  v->state.store(VKeyRecord::kLive, std::memory_order_release);
  evictions_.fetch_add(1, std::memory_order_relaxed);
  return 0;
}

int VKeyCache::load_locked(int vkey, VKeyRecord& v, int slot) {
  Slot& sl = slots_[static_cast<std::size_t>(slot)];
  if (sl.baseline != static_cast<int>(v.base)) {
    // Every thread must hold this vkey's base rights on the key, threads
    // that start meanwhile included.
    backend_.set_start_rights(sl.hw_key, static_cast<int>(v.base));
    if (int r = backend_.set_rights_in(backend::kAllThreads, sl.hw_key, v.base, nullptr, nullptr); r < 0) {
      sl.baseline = -1;  // mixed: the next load sets it again
      backend_.set_start_rights(sl.hw_key, static_cast<int>(kNoAccess));
      return r;
    }
    sl.baseline = static_cast<int>(v.base);
  }
  int error = 0;
  space_.for_each_of_locked(Tag::vkey(vkey), [&](const TaggedRange& t) {
    const int r = backend_.protect(t.start, t.end - t.start, t.prot, sl.hw_key);
    if (r < 0 && r != -ENOMEM && error == 0) error = r;  // ENOMEM: unmapped behind pkeys' back
  });
  if (error < 0) {  // back to enforcement by page protections
    (void)space_.enforce_locked(Tag::vkey(vkey), v.base);
    return error;
  }
  sl.vkey = vkey;
  v.state.store(VKeyRecord::kLive | (static_cast<std::uint64_t>(slot + 1) << VKeyRecord::kSlotShift) | 1,
                std::memory_order_release);
  return 0;
}

bool VKeyCache::give_back_key_locked() {
  if (slot_count_ == 0) return false;
  Slot& sl = slots_[static_cast<std::size_t>(slot_count_ - 1)];
  if (sl.vkey != 0 && evict_locked(slot_count_ - 1) < 0) return false;
  hw_mask_.fetch_and(~(1ull << sl.hw_key), std::memory_order_acq_rel);
  backend_.set_start_rights(sl.hw_key, -1);
  backend_.release_key(sl.hw_key);
  sl = Slot{};
  --slot_count_;
  return true;
}

int VKeyCache::vkey_of_hardware_key_locked(int hw_key) const noexcept {
  for (int i = 0; i < slot_count_; ++i)
    if (slots_[static_cast<std::size_t>(i)].hw_key == hw_key)
      return slots_[static_cast<std::size_t>(i)].vkey > 0 ? slots_[static_cast<std::size_t>(i)].vkey : -1;
  return -1;
}

void VKeyCache::stats_locked(VKeyStats& st) const noexcept {
  for (const Counter& c : hits_) st.hits += c.n.load(std::memory_order_relaxed);
  st.misses = misses_.load(std::memory_order_relaxed);
  st.evictions = evictions_.load(std::memory_order_relaxed);
  st.capacity = static_cast<unsigned>(capacity_);
  st.hardware_keys = static_cast<unsigned>(slot_count_);
  for (int i = 0; i < slot_count_; ++i) {
    const int vk = slots_[static_cast<std::size_t>(i)].vkey;
    if (vk == 0) continue;
    ++st.cached;
    if (const VKeyRecord* v = table_.find(vk); v && v->pinned()) ++st.pinned;
  }
}

int VKeyCache::set_capacity(int n) {
  std::lock_guard lock(space_);
  while (slot_count_ > n)
    if (!give_back_key_locked()) return -EBUSY;
  capacity_ = n;
  return 0;
}

}  // namespace pkeys::core
