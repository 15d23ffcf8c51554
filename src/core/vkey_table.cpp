// SPDX-License-Identifier: MIT
#include "core/vkey_table.hpp"

#include <cerrno>

namespace pkeys::core {

VKeyRecord* VKeyTable::find(int vkey) const noexcept {
  VKeyRecord* v = record_of(vkey);
  return v && (v->state.load(std::memory_order_acquire) & VKeyRecord::kLive) ? v : nullptr;
}

VKeyRecord& VKeyTable::record_for_new(int vkey) {
  auto& chunk = chunks_[static_cast<std::size_t>(vkey / kChunk)];
  VKeyRecord* c = chunk.load(std::memory_order_acquire);
  if (!c) {
    c = new VKeyRecord[kChunk];  // kept for the process's life: readers hold no lock
    chunk.store(c, std::memory_order_release);
  }
  return c[vkey % kChunk];
}

int VKeyTable::create_locked(unsigned rights) {
  int id;
  if (!free_ids_.empty()) {
    id = free_ids_.back();
  } else {
    if (next_id_ >= kMaxVKeys) return -ENOSPC;
    id = next_id_;
  }
  VKeyRecord& v = record_for_new(id);  // may throw: nothing taken yet
  v.opens.clear();
  if (!free_ids_.empty()) {
    free_ids_.pop_back();
  } else {
    ++next_id_;
  }
  v.base = rights;
  v.last_use.store(0, std::memory_order_relaxed);
  v.state.store(VKeyRecord::kLive, std::memory_order_release);
  ++live_;
  return id;
}

int VKeyTable::destroy_locked(int vkey, VKeyRecord& v) {
  // May throw: before anything changes. Geometric, or destroying n vkeys
  // in a row would copy the list n times.
  if (free_ids_.size() == free_ids_.capacity()) free_ids_.reserve(free_ids_.empty() ? 64 : 2 * free_ids_.size());
  // A begin pins without the lock, so the record dies only if no pin came
  // in: a plain store would wipe that pin, and its end would then unpin
  // (corrupt) the vkey that reuses the id.
  std::uint64_t s = v.state.load(std::memory_order_acquire);
  do {
    if (s & VKeyRecord::kPinMask) return -EBUSY;
  } while (!v.state.compare_exchange_weak(s, 0, std::memory_order_acq_rel, std::memory_order_acquire));
  free_ids_.push_back(vkey);
  --live_;
  return 0;
}

}  // namespace pkeys::core
