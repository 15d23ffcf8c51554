// SPDX-License-Identifier: MIT
#include "core/vkey_table.hpp"

#include <cerrno>
#include <new>

#include "os/internal_memory.hpp"

namespace pkeys::core {

constinit VKeyRecord* g_vkey_records = nullptr;
constinit std::atomic<std::uint32_t> g_vkey_id_limit{0};

int VKeyTable::create_locked(unsigned rights) {
  int id;
  if (!free_ids_.empty()) {
    id = free_ids_.back();
  } else {
    if (next_id_ >= kMaxVKeys) return -ENOSPC;
    id = next_id_;
  }
  if (!g_vkey_records) {
    // Zeroed, never freed or moved: lock-free readers index it.
    void* p = os::internal_reserve(static_cast<std::size_t>(kMaxVKeys) * sizeof(VKeyRecord));
    if (!p) return -ENOMEM;
    g_vkey_records = static_cast<VKeyRecord*>(p);
  }
  VKeyRecord& v = g_vkey_records[id];
  if (id == next_id_) {
    new (&v) VKeyRecord;  // unseen by readers until the limit covers it
  } else {
    v.opens.clear();
  }
  if (!free_ids_.empty()) {
    free_ids_.pop_back();
  } else {
    ++next_id_;
  }
  v.base = rights;
  v.slot = -1;
  // A dead record is not pinnable: no lock-free pin changes its state.
  v.state.store(VKeyRecord::kLive, std::memory_order_release);
  g_vkey_id_limit.store(static_cast<std::uint32_t>(next_id_), std::memory_order_release);
  ++live_;
  return id;
}

int VKeyTable::destroy_locked(int vkey, VKeyRecord& v, std::uint64_t* last_state) {
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
  *last_state = s;
  free_ids_.push_back(vkey);
  --live_;
  return 0;
}

}  // namespace pkeys::core
