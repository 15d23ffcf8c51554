// SPDX-License-Identifier: MIT
#include "core/vkey_cache.hpp"

#include <cerrno>
#include <cstdlib>
#include <mutex>
#include <tuple>

#include "backend/register_rights.hpp"
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

int VKeyCache::pin(int vkey, VKeyRecord& v) {
  std::lock_guard lock(space_);
  for (;;) {
    if (!table_.find(vkey)) return -EINVAL;
    if (try_pin(v)) return 0;  // loaded by another thread meanwhile: a hit
    int slot = -1;
    for (int i = 0; i < slot_count_ && slot < 0; ++i)
      if (slots_[static_cast<std::size_t>(i)].hw_key >= 0 && slots_[static_cast<std::size_t>(i)].vkey == 0) slot = i;
    if (slot < 0 && held_ < capacity_) {
      // The kernel gives the caller no access; every other thread had the
      // number reset to no access when it was last freed.
      const int hw = backend_.acquire_key(kNoAccess);
      if (hw > 0) {
        int hole = 0;  // a slot whose key was given back, else a new one
        while (hole < slot_count_ && slots_[static_cast<std::size_t>(hole)].hw_key >= 0) ++hole;
        backend_.set_start_rights(hw, static_cast<int>(kNoAccess));
        slots_[static_cast<std::size_t>(hole)] = Slot{hw, 0, static_cast<int>(kNoAccess)};
        hw_mask_.fetch_or(1ull << hw, std::memory_order_acq_rel);
        if (hole == slot_count_) ++slot_count_;
        ++held_;
        slot = hole;
      }
    }
    if (slot < 0) {
      slot = evict_lru_locked();
      if (slot == -EAGAIN) continue;  // a candidate got pinned: look again
      if (slot < 0) return slot;
    }
    if (int r = load_locked(vkey, v, slot); r < 0) return r;
    ++misses_;
    slots_[static_cast<std::size_t>(slot)].last_use = ++clock_;
    return 0;
  }
}

void VKeyCache::observe_uses_locked() noexcept {
  for (int i = 0; i < slot_count_; ++i) {
    Slot& sl = slots_[static_cast<std::size_t>(i)];
    if (sl.vkey == 0) continue;
    const VKeyRecord* v = table_.find(sl.vkey);
    if (!v) continue;
    const std::uint64_t s = v->state.load(std::memory_order_acquire);
    const std::uint32_t unseen = unseen_uses(i, s);
    if (unseen == 0) continue;
    hits_ += unseen;
    sl.uses_seen = VKeyRecord::uses_of(s);
    sl.last_use = clock_;
  }
}

int VKeyCache::evict_lru_locked() {
  observe_uses_locked();
  int victim = -1;
  std::uint64_t oldest = ~0ull;
  for (int i = 0; i < slot_count_; ++i) {
    const int vk = slots_[static_cast<std::size_t>(i)].vkey;
    if (vk == 0) continue;
    VKeyRecord* v = table_.find(vk);
    if (!v || v->pinned()) continue;
    const std::uint64_t used = slots_[static_cast<std::size_t>(i)].last_use;
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
  if (!table_.find(slots_[static_cast<std::size_t>(slot)].vkey)) return -EINVAL;
  if (!claim_locked(slot)) return -EAGAIN;
  evict_claimed_locked(slot);
  return 0;
}

bool VKeyCache::claim_locked(int slot) noexcept {
  VKeyRecord* v = table_.find(slots_[static_cast<std::size_t>(slot)].vkey);
  if (!v) return false;
  // Fails if a pin came in since the caller looked, or the slot is claimed
  // already (not pinnable: claiming it twice would give its key back twice).
  std::uint64_t s = v->state.load(std::memory_order_acquire);
  return (s & VKeyRecord::kPinMask) == 0 && VKeyRecord::pinnable(s) &&
         v->state.compare_exchange_strong(s, s & ~VKeyRecord::kPinnable, std::memory_order_acq_rel);
}

void VKeyCache::evict_claimed_locked(int slot) noexcept {
  Slot& sl = slots_[static_cast<std::size_t>(slot)];
  VKeyRecord* v = table_.find(sl.vkey);
  // A range it cannot change was unmapped behind pkeys' back.
  // Cached, its pages hold their own protections (rights 0) under the key.
  (void)space_.enforce_locked(Tag::vkey(sl.vkey), v->base, 0);
  sl.vkey = 0;
  // Claimed, not pinnable: its state (pins 0, its uses) stays as it is.
  const std::uint64_t s = v->state.load(std::memory_order_acquire);
  hits_ += unseen_uses(slot, s);
  v->slot = -1;
  v->state.store(VKeyRecord::kLive, std::memory_order_release);
  ++evictions_;
}

bool VKeyCache::claim_idle_locked(int n, int* out) noexcept {
  int claimed = 0;
  for (int i = 0; i < slot_count_ && claimed < n; ++i)
    if (slots_[static_cast<std::size_t>(i)].hw_key >= 0 && slots_[static_cast<std::size_t>(i)].vkey == 0)
      out[claimed++] = i;
  const int free_slots = claimed;
  // Then cached vkeys, least recently used first; a pinned one is passed
  // over. Each slot is tried once: its last use may move on while we look
  // (a begin and end in between), so an order by last use could meet it
  // again.
  std::uint32_t tried = 0;
  static_assert(std::tuple_size_v<decltype(slots_)> <= 32);
  observe_uses_locked();
  while (claimed < n) {
    int best = -1;
    std::uint64_t best_use = ~0ull;
    for (int i = 0; i < slot_count_; ++i) {
      const int vk = slots_[static_cast<std::size_t>(i)].vkey;
      if (vk == 0 || (tried >> i & 1u)) continue;
      if (!table_.find(vk)) continue;
      const std::uint64_t used = slots_[static_cast<std::size_t>(i)].last_use;
      if (best < 0 || used < best_use) {
        best = i;
        best_use = used;
      }
    }
    if (best < 0) break;
    tried |= 1u << best;
    if (claim_locked(best)) out[claimed++] = best;
  }
  if (claimed == n) return true;
  for (int k = free_slots; k < claimed; ++k)  // undo: they take pins again
    table_.find(slots_[static_cast<std::size_t>(out[k])].vkey)
        ->state.fetch_or(VKeyRecord::kPinnable, std::memory_order_acq_rel);
  return false;
}

void VKeyCache::release_slot_locked(int slot) noexcept {
  Slot& sl = slots_[static_cast<std::size_t>(slot)];
  if (sl.vkey != 0) evict_claimed_locked(slot);
  hw_mask_.fetch_and(~(1ull << sl.hw_key), std::memory_order_acq_rel);
  backend_.set_start_rights(sl.hw_key, -1);
  backend_.release_key(sl.hw_key);
  sl = Slot{};
  --held_;
  while (slot_count_ > 0 && slots_[static_cast<std::size_t>(slot_count_ - 1)].hw_key < 0) --slot_count_;
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
    (void)space_.enforce_locked(Tag::vkey(vkey), v.base, AddressSpace::kUnchecked);  // mixed
    return error;
  }
  sl.vkey = vkey;
  sl.uses_seen = 0;
  v.slot = slot;
  // The switch's masks for a lock-free begin, published by the state store
  // (not pinnable before it: no lock-free pin changed the state meanwhile).
  v.keep = backend::register_keep_mask(sl.hw_key);
  v.access_bit = backend::register_access_bit(sl.hw_key);
  v.key_bits = ~v.keep;
  v.state.store(VKeyRecord::kLive | VKeyRecord::kPinnable | 1, std::memory_order_release);
  return 0;
}

bool VKeyCache::give_back_key_locked() {
  int slot;
  if (!claim_idle_locked(1, &slot)) return false;
  release_slot_locked(slot);
  return true;
}

int VKeyCache::vkey_of_hardware_key_locked(int hw_key) const noexcept {
  for (int i = 0; i < slot_count_; ++i)
    if (slots_[static_cast<std::size_t>(i)].hw_key == hw_key)
      return slots_[static_cast<std::size_t>(i)].vkey > 0 ? slots_[static_cast<std::size_t>(i)].vkey : -1;
  return -1;
}

void VKeyCache::drop_locked(int slot, std::uint64_t last_state) noexcept {
  hits_ += unseen_uses(slot, last_state);
  slots_[static_cast<std::size_t>(slot)].vkey = 0;
}

void VKeyCache::stats_locked(VKeyStats& st) const noexcept {
  st.hits = hits_;
  st.misses = misses_;
  st.evictions = evictions_;
  st.capacity = static_cast<unsigned>(capacity_);
  st.hardware_keys = static_cast<unsigned>(held_);
  for (int i = 0; i < slot_count_; ++i) {
    const int vk = slots_[static_cast<std::size_t>(i)].vkey;
    if (vk == 0) continue;
    ++st.cached;
    const VKeyRecord* v = table_.find(vk);
    if (!v) continue;
    const std::uint64_t s = v->state.load(std::memory_order_acquire);
    st.hits += unseen_uses(i, s);
    if (s & VKeyRecord::kPinMask) ++st.pinned;
  }
}

int VKeyCache::set_capacity(int n) {
  std::lock_guard lock(space_);
  // Every key to give back is claimed before any goes: a limit that an
  // open vkey would break changes nothing.
  if (const int excess = held_ - n; excess > 0) {
    std::array<int, std::tuple_size_v<decltype(slots_)>> claimed;
    if (!claim_idle_locked(excess, claimed.data())) return -EBUSY;
    for (int k = 0; k < excess; ++k) release_slot_locked(claimed[static_cast<std::size_t>(k)]);
  }
  capacity_ = n;
  return 0;
}

}  // namespace pkeys::core
