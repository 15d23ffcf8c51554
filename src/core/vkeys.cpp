// SPDX-License-Identifier: MIT
#include "core/vkeys.hpp"

#include <x86intrin.h>

#include <cerrno>
#include <cstdlib>
#include <vector>

#include "os/pages.hpp"
#include "os/proc_maps.hpp"
#include "pkeys/pkeys.h"

namespace pkeys::core {

extern std::atomic<std::size_t> g_tagged_ranges;

namespace {

constexpr unsigned kNoAccess = PKEY_DISABLE_ACCESS;

bool valid_rights(unsigned rights) { return (rights & ~PKEYS_RIGHTS_MASK) == 0u; }

// The vkeys the calling thread has open, innermost last.
struct OpenVKey {
  int vkey;
  int hw_key;          // -1 on the emulation
  unsigned prev;       // the thread's rights on hw_key before begin
  std::uint64_t sequence;  // emulation: this begin's entry in VKey::opens
};
struct OpenStack {
  int n = 0;
  OpenVKey entries[VKeys::kMaxNesting];
};
thread_local OpenStack t_open;

// Each thread counts its hits in one shard, so begin stays free of shared
// read-modify-writes.
std::size_t my_shard() {
  static std::atomic<std::size_t> next{0};
  thread_local const std::size_t shard = next.fetch_add(1, std::memory_order_relaxed);
  return shard;
}

int default_capacity(int max_keys) {
  int n = 8;
  if (const char* s = std::getenv("PKEYS_VKEY_CACHE")) n = std::atoi(s);
  if (n < 0) n = 0;
  return n < max_keys - 1 ? n : max_keys - 1;
}

}  // namespace

VKeys::VKeys(backend::Backend& backend, RangeRegistry& ranges, std::mutex& mu)
    : backend_(backend),
      ranges_(ranges),
      mu_(mu),
      hardware_((backend.capabilities() & PKEYS_CAP_PER_THREAD_RIGHTS) != 0),
      capacity_(hardware_ ? default_capacity(backend.max_keys()) : 0) {}

VKeys::VKey* VKeys::find(int vkey) const noexcept {
  if (vkey <= 0 || vkey >= kMaxVKeys) return nullptr;
  VKey* chunk = chunks_[static_cast<std::size_t>(vkey / kChunk)].load(std::memory_order_acquire);
  if (!chunk) return nullptr;
  VKey* v = &chunk[vkey % kChunk];
  return (v->state.load(std::memory_order_acquire) & kLive) ? v : nullptr;
}

VKeys::VKey& VKeys::slot_for_new(int vkey) {
  auto& chunk = chunks_[static_cast<std::size_t>(vkey / kChunk)];
  VKey* c = chunk.load(std::memory_order_acquire);
  if (!c) {
    c = new VKey[kChunk];  // kept for the process's life: readers hold no lock
    chunk.store(c, std::memory_order_release);
  }
  return c[vkey % kChunk];
}

int VKeys::create(unsigned rights) {
  if (!valid_rights(rights)) return -EINVAL;
  std::lock_guard lock(mu_);
  int id;
  if (!free_ids_.empty()) {
    id = free_ids_.back();
    free_ids_.pop_back();
  } else {
    if (next_id_ >= kMaxVKeys) return -ENOSPC;
    id = next_id_++;
  }
  VKey& v = slot_for_new(id);
  v.base = rights;
  v.opens.clear();
  v.last_use.store(0, std::memory_order_relaxed);
  v.state.store(kLive, std::memory_order_release);
  ++live_;
  return id;
}

int VKeys::destroy(int vkey) {
  std::lock_guard lock(mu_);
  VKey* v = find(vkey);
  if (!v) return -EINVAL;
  const std::uint64_t s = v->state.load(std::memory_order_acquire);
  if ((s & kPinMask) != 0 || !v->opens.empty()) return -EBUSY;
  if (ranges_.has_key(tag(vkey))) {
    // Ranges unmapped by raw system calls no longer count.
    ranges_.keep_only(os::mapped_ranges_of_self());
    g_tagged_ranges.store(ranges_.size(), std::memory_order_release);
    if (ranges_.has_key(tag(vkey))) return -EBUSY;
  }
  if (const int slot = slot_of(s); slot >= 0) slots_[static_cast<std::size_t>(slot)].vkey = 0;
  v->state.store(0, std::memory_order_release);
  free_ids_.push_back(vkey);
  --live_;
  return 0;
}

int VKeys::protect(std::uintptr_t start, std::size_t len, int prot, int vkey) {
  std::lock_guard lock(mu_);
  VKey* v = find(vkey);
  if (!v) return -EINVAL;
  const int slot = slot_of(v->state.load(std::memory_order_acquire));
  int r;
  if (slot >= 0) {
    r = backend_.protect(start, len, prot, slots_[static_cast<std::size_t>(slot)].hw_key, ranges_);
  } else {
    r = backend_.protect(start, len, backend::enforced_prot(prot, current_rights(*v)), 0, ranges_);
  }
  if (r < 0) return r;
  ranges_.assign(start, os::page_end(start, len), tag(vkey), prot);
  g_tagged_ranges.store(ranges_.size(), std::memory_order_release);
  return 0;
}

bool VKeys::try_pin(VKey& v, int* slot) noexcept {
  std::uint64_t s = v.state.load(std::memory_order_acquire);
  for (;;) {
    if (!(s & kLive) || (s & kBusy) || !(s & kSlotMask)) return false;
    if (v.state.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel)) {
      *slot = slot_of(s);
      return true;
    }
  }
}

int VKeys::begin(int vkey, unsigned rights) {
  if (!valid_rights(rights)) return -EINVAL;
  VKey* v = find(vkey);
  if (!v) return -EINVAL;
  OpenStack& open = t_open;
  if (open.n == kMaxNesting) return -EMFILE;
  if (!hardware_) {
    std::lock_guard lock(mu_);
    if (!find(vkey)) return -EINVAL;
    // Process-wide: the latest begin's rights hold while any thread has it open.
    if (int r = enforce_locked(vkey, rights); r < 0) return r;
    const std::uint64_t sequence = ++open_sequence_;
    v->opens.emplace_back(sequence, rights);
    open.entries[open.n++] = OpenVKey{vkey, -1, 0, sequence};
    return 0;
  }
  int slot;
  if (try_pin(*v, &slot)) {
    hits_[my_shard() % hits_.size()].n.fetch_add(1, std::memory_order_relaxed);
  } else if (int r = begin_slow(vkey, *v, &slot); r < 0) {
    return r;
  }
  // Pinned: the slot's hardware key cannot change until end.
  const int hw = slots_[static_cast<std::size_t>(slot)].hw_key;
  open.entries[open.n++] = OpenVKey{vkey, hw, backend_.get_rights(hw), 0};
  backend_.set_rights(hw, rights, ranges_);
  v->last_use.store(__rdtsc(), std::memory_order_relaxed);
  return 0;
}

int VKeys::end(int vkey) {
  OpenStack& open = t_open;
  int i = open.n - 1;
  while (i >= 0 && open.entries[i].vkey != vkey) --i;
  if (i < 0) return -EINVAL;  // not open in this thread
  const OpenVKey e = open.entries[i];
  for (int j = i; j + 1 < open.n; ++j) open.entries[j] = open.entries[j + 1];
  --open.n;
  VKey* v = find(vkey);
  if (!hardware_) {
    std::lock_guard lock(mu_);
    if (!v) return 0;
    // Drop this begin; the newest begin still open rules, else the
    // process-wide rights.
    const unsigned before = current_rights(*v);
    std::erase_if(v->opens, [&](const auto& o) { return o.first == e.sequence; });
    const unsigned after = current_rights(*v);
    return after == before ? 0 : enforce_locked(vkey, after);
  }
  backend_.set_rights(e.hw_key, e.prev, ranges_);
  if (v) v->state.fetch_sub(1, std::memory_order_release);
  return 0;
}

int VKeys::begin_slow(int vkey, VKey& v, int* slot_out) {
  std::lock_guard lock(mu_);
  for (;;) {
    if (!find(vkey)) return -EINVAL;
    if (try_pin(v, slot_out)) {  // loaded by another thread meanwhile
      hits_[my_shard() % hits_.size()].n.fetch_add(1, std::memory_order_relaxed);
      return 0;
    }
    int slot = -1;
    for (int i = 0; i < slot_count_ && slot < 0; ++i)
      if (slots_[static_cast<std::size_t>(i)].vkey == 0) slot = i;
    if (slot < 0 && slot_count_ < capacity_) {
      // The kernel gives the caller no access; every other thread had the
      // number reset to no access when it was last freed.
      const int hw = backend_.acquire_key(kNoAccess);
      if (hw > 0) {
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

int VKeys::evict_lru_locked() {
  int victim = -1;
  std::uint64_t oldest = ~0ull;
  for (int i = 0; i < slot_count_; ++i) {
    const int vk = slots_[static_cast<std::size_t>(i)].vkey;
    if (vk == 0) continue;
    VKey* v = find(vk);
    if (!v || (v->state.load(std::memory_order_acquire) & kPinMask) != 0) continue;
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

int VKeys::evict_locked(int slot) {
  Slot& sl = slots_[static_cast<std::size_t>(slot)];
  const int vkey = sl.vkey;
  VKey* v = find(vkey);
  if (!v) return -EINVAL;
  // Stop new pins; fails if one came in since the caller looked.
  std::uint64_t s = v->state.load(std::memory_order_acquire);
  if ((s & kPinMask) != 0 || !v->state.compare_exchange_strong(s, s | kBusy, std::memory_order_acq_rel))
    return -EAGAIN;
  // Retag to key 0 with protections enforcing the base rights; each call
  // switches a range atomically, so protection never lapses.
  (void)enforce_locked(vkey, v->base);  // a range it cannot change was unmapped behind pkeys' back
  sl.vkey = 0;
  v->state.store(kLive, std::memory_order_release);
  evictions_.fetch_add(1, std::memory_order_relaxed);
  return 0;
}

int VKeys::load_locked(int vkey, VKey& v, int slot) {
  Slot& sl = slots_[static_cast<std::size_t>(slot)];
  if (sl.baseline != static_cast<int>(v.base)) {
    // Every thread must hold this vkey's base rights on the key.
    if (int r = backend_.set_rights_in(0, sl.hw_key, v.base, ranges_, nullptr); r < 0) {
      sl.baseline = -1;
      return r;
    }
    sl.baseline = static_cast<int>(v.base);
  }
  int error = 0;
  ranges_.for_each_of_key(tag(vkey), [&](const TaggedRange& t) {
    const int r = backend_.protect(t.start, t.end - t.start, t.prot, sl.hw_key, ranges_);
    if (r < 0 && r != -ENOMEM && error == 0) error = r;  // ENOMEM: unmapped behind pkeys' back
  });
  if (error < 0) {  // back to enforcement by page protections
    (void)enforce_locked(vkey, v.base);
    return error;
  }
  sl.vkey = vkey;
  v.state.store(kLive | (static_cast<std::uint64_t>(slot + 1) << kSlotShift) | 1,
                std::memory_order_release);
  return 0;
}

int VKeys::enforce_locked(int vkey, unsigned rights) {
  int error = 0;
  ranges_.for_each_of_key(tag(vkey), [&](const TaggedRange& t) {
    const int r = backend_.protect(t.start, t.end - t.start, backend::enforced_prot(t.prot, rights), 0, ranges_);
    if (r < 0 && r != -ENOMEM && error == 0) error = r;
  });
  return error;
}

int VKeys::set(int vkey, unsigned rights) {
  if (!valid_rights(rights)) return -EINVAL;
  std::lock_guard lock(mu_);
  VKey* v = find(vkey);
  if (!v) return -EINVAL;
  const std::uint64_t s = v->state.load(std::memory_order_acquire);
  if ((s & kPinMask) != 0 || !v->opens.empty()) return -EBUSY;  // open in some thread
  const unsigned old = v->base;
  v->base = rights;
  // A cached vkey is evicted: its threads' register bits hold the old base,
  // while an evicted vkey's pages take the new one at once.
  if (const int slot = slot_of(s); slot >= 0) {
    if (int r = evict_locked(slot); r < 0) {
      v->base = old;
      return r == -EAGAIN ? -EBUSY : r;
    }
    return 0;
  }
  if (int r = enforce_locked(vkey, rights); r < 0) {
    v->base = old;
    enforce_locked(vkey, old);
    return r;
  }
  return 0;
}

int VKeys::get(int vkey) const {
  std::lock_guard lock(mu_);
  const VKey* v = find(vkey);
  return v ? static_cast<int>(v->base) : -EINVAL;
}

VKeyStats VKeys::stats() const {
  std::lock_guard lock(mu_);
  VKeyStats st;
  for (const Counter& c : hits_) st.hits += c.n.load(std::memory_order_relaxed);
  st.misses = misses_.load(std::memory_order_relaxed);
  st.evictions = evictions_.load(std::memory_order_relaxed);
  st.live = live_;
  st.capacity = static_cast<unsigned>(capacity_);
  st.hardware_keys = static_cast<unsigned>(slot_count_);
  for (int i = 0; i < slot_count_; ++i) {
    const int vk = slots_[static_cast<std::size_t>(i)].vkey;
    if (vk == 0) continue;
    ++st.cached;
    if (const VKey* v = find(vk); v && (v->state.load(std::memory_order_acquire) & kPinMask) != 0)
      ++st.pinned;
  }
  return st;
}

bool VKeys::release_last_slot_locked() {
  if (slot_count_ == 0) return false;
  Slot& sl = slots_[static_cast<std::size_t>(slot_count_ - 1)];
  if (sl.vkey != 0 && evict_locked(slot_count_ - 1) < 0) return false;
  hw_mask_.fetch_and(~(1ull << sl.hw_key), std::memory_order_acq_rel);
  backend_.release_key(sl.hw_key);
  sl = Slot{};
  --slot_count_;
  return true;
}

int VKeys::set_capacity(int n) {
  if (n < 0 || n >= backend_.max_keys()) return -EINVAL;
  if (!hardware_) return n == 0 ? 0 : -ENOTSUP;
  std::lock_guard lock(mu_);
  while (slot_count_ > n)
    if (!release_last_slot_locked()) return -EBUSY;
  capacity_ = n;
  return 0;
}

bool VKeys::surrender_key_locked() { return release_last_slot_locked(); }

int VKeys::reprotect_locked(const TaggedRange& piece, int prot) {
  const int vkey = piece.key - kVKeyTagBase;
  VKey* v = find(vkey);
  if (!v) return -EINVAL;
  const int slot = slot_of(v->state.load(std::memory_order_acquire));
  if (slot >= 0)
    return backend_.protect(piece.start, piece.end - piece.start, prot,
                            slots_[static_cast<std::size_t>(slot)].hw_key, ranges_);
  return backend_.protect(piece.start, piece.end - piece.start,
                          backend::enforced_prot(prot, current_rights(*v)), 0, ranges_);
}

int VKeys::fault_vkey_locked(const siginfo_t& si) const noexcept {
  if (si.si_signo != SIGSEGV) return -1;
  constexpr int kSegvPkuerr = 4;
  if (si.si_code == kSegvPkuerr) {
    for (int i = 0; i < slot_count_; ++i)
      if (slots_[static_cast<std::size_t>(i)].hw_key == static_cast<int>(si.si_pkey))
        return slots_[static_cast<std::size_t>(i)].vkey > 0 ? slots_[static_cast<std::size_t>(i)].vkey : -1;
    return -1;
  }
  if (si.si_code != SEGV_ACCERR) return -1;
  const auto r = ranges_.find(reinterpret_cast<std::uintptr_t>(si.si_addr));
  if (!r || !is_vkey_tag(r->key)) return -1;
  return r->key - kVKeyTagBase;
}

}  // namespace pkeys::core
