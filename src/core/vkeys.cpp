// SPDX-License-Identifier: MIT
#include "core/vkeys.hpp"

#include <pthread.h>

#include <cerrno>
#include <mutex>

#include "os/internal_memory.hpp"
#include "os/pages.hpp"

namespace pkeys::core {

namespace vkeys_detail {
// Trivially destructible: still there when the exit hook below runs.
constinit thread_local OpenStack t_open __attribute__((tls_model("initial-exec")));
}  // namespace vkeys_detail

using vkeys_detail::OpenStack;
using vkeys_detail::OpenVKey;
using vkeys_detail::t_open;

namespace {

// A thread that exits with vkeys open closes them, or they would stay
// pinned (cache) or in force (emulation) for good. A thread-specific-data
// destructor, not a thread_local one: those run after every thread_local
// destructor (which may still end a vkey), and it asks for one more round
// to run after the program's own keys' destructors too.
pthread_key_t g_exit_key;
bool g_have_exit_key = false;
VKeys* g_vkeys = nullptr;  // the process's, never destroyed

void close_at_thread_exit(void* round) noexcept {
  if (round == reinterpret_cast<void*>(1)) {
    ::pthread_setspecific(g_exit_key, reinterpret_cast<void*>(2));
    return;
  }
  OpenStack& open = t_open;
  try {
    while (open.n > 0) g_vkeys->end(open.entries[open.n].vkey);
  } catch (...) {  // the lock failed: nothing better to do as the thread dies
  }
  open.limit = 0;  // a begin from a later destructor sets this up again
}

}  // namespace

int VKeys::first_begin_in_thread() noexcept {
  OpenStack& open = t_open;
  if (open.limit != 0) return -EMFILE;  // set up: the stack is full
  if (g_have_exit_key && ::pthread_setspecific(g_exit_key, reinterpret_cast<void*>(1)) != 0) return -ENOMEM;
  if (cache_ && !open.hits) open.hits = cache_->hit_counter_for_thread();
  open.limit = kMaxNesting;
  return 0;
}

VKeys::VKeys(backend::Backend& backend, AddressSpace& space) : backend_(backend), space_(space), emulation_(space) {
  // The cache's begin and end switch the register inline (register_rights.hpp).
  if ((backend.capabilities() & (backend::kPerThreadRights | backend::kHardware)) ==
      (backend::kPerThreadRights | backend::kHardware))
    cache_.emplace(backend, space, table_);
  g_vkeys = this;
  g_have_exit_key = ::pthread_key_create(&g_exit_key, close_at_thread_exit) == 0;
}

int VKeys::create(unsigned rights) {
  if (!valid_rights(rights)) return -EINVAL;
  std::lock_guard lock(space_);
  return table_.create_locked(rights);
}

int VKeys::destroy(int vkey) {
  std::lock_guard lock(space_);
  VKeyRecord* v = table_.find(vkey);
  if (!v) return -EINVAL;
  if (v->pinned() || !v->opens.empty()) return -EBUSY;
  if (space_.tag_in_use_locked(Tag::vkey(vkey))) return -EBUSY;
  const int slot = v->slot();
  // May throw, before any change: then the slot stays the vkey's.
  if (int r = table_.destroy_locked(vkey, *v); r < 0) return r;
  if (cache_ && slot >= 0) cache_->drop_locked(slot);
  return 0;
}

int VKeys::protect_piece_locked(int vkey, std::uintptr_t start, std::size_t len, int prot) noexcept {
  const VKeyRecord* v = table_.find(vkey);
  if (!v) return -EINVAL;
  if (const int slot = v->slot(); slot >= 0) return backend_.protect(start, len, prot, cache_->hardware_key(slot));
  return backend_.protect(start, len, os::enforced_prot(prot, VKeyEmulation::current_rights(*v)), 0);
}

int VKeys::protect(std::uintptr_t start, std::size_t len, int prot, int vkey) {
  if (os::overlaps_internal_memory(start, os::page_round_up(len))) return -EACCES;  // pkeys' own memory
  std::lock_guard lock(space_);
  if (!table_.find(vkey)) return -EINVAL;
  return space_.protect_locked(start, len, prot, Tag::vkey(vkey));
}

int VKeys::begin(int vkey, unsigned rights) {
  if (begin_fast(vkey, rights) == 0) return 0;
  return begin_slow(vkey, rights);
}

int VKeys::end(int vkey) {
  if (end_fast(vkey) == 0) return 0;
  return end_slow(vkey);
}

int VKeys::begin_slow(int vkey, unsigned rights) {
  if (!valid_rights(rights)) return -EINVAL;
  VKeyRecord* v = table_.find(vkey);
  if (!v) return -EINVAL;
  OpenStack& open = t_open;
  if (open.n >= open.limit)
    if (int r = first_begin_in_thread(); r < 0) return r;
  if (!cache_) {
    std::lock_guard lock(space_);
    if (!table_.find(vkey)) return -EINVAL;
    std::uint64_t sequence;
    if (int r = emulation_.open_locked(vkey, *v, rights, &sequence); r < 0) return r;
    open.entries[open.n + 1] = OpenVKey{v, vkey, 0, 0, sequence};
    ++open.n;
    return 0;
  }
  int hw;
  if (cache_->try_pin(*v, &hw))
    open.hits->fetch_add(1, std::memory_order_relaxed);
  else if (int r = cache_->pin(vkey, *v, &hw); r < 0)
    return r;
  // Pinned: the slot's hardware key cannot change until end.
  push_cached(open, open.n, v, vkey, hw, rights);
  return 0;
}

int VKeys::end_slow(int vkey) {
  OpenStack& open = t_open;
  int i = open.n;
  while (i > 0 && open.entries[i].vkey != vkey) --i;
  if (i == 0) return -EINVAL;  // not open in this thread
  const OpenVKey e = open.entries[i];
  for (int j = i; j < open.n; ++j) open.entries[j] = open.entries[j + 1];
  --open.n;
  if (e.keep == 0) {  // the emulation's
    std::lock_guard lock(space_);
    return emulation_.close_locked(vkey, *e.record, e.sequence);
  }
  backend::register_restore(e.keep, e.saved);
  VKeyCache::unpin(*e.record);
  return 0;
}

void VKeys::close_above(int depth) noexcept {
  OpenStack& open = t_open;
  if (depth < 0) depth = 0;
  while (open.n > depth) {
    const OpenVKey e = open.entries[open.n];
    if (e.keep != 0) {
      --open.n;
      backend::register_restore(e.keep, e.saved);
      VKeyCache::unpin(*e.record);
      continue;
    }
    // The emulation's: its close needs the lock, which the code the jump
    // leaves (or a thread pkeys waits for) may hold.
    if (!space_.lock_from_signal_handler()) return;
    --open.n;
    (void)emulation_.close_locked(e.vkey, *e.record, e.sequence);
    space_.unlock();
  }
}

void VKeys::after_fork_in_child_locked() noexcept {
  const OpenStack& open = t_open;
  table_.for_each_live_locked([&](int vkey, VKeyRecord& v) {
    std::uint64_t own_pins = 0;
    for (int i = 1; i <= open.n; ++i)
      if (open.entries[i].record == &v && open.entries[i].keep != 0) ++own_pins;
    v.state.store((v.state.load(std::memory_order_relaxed) & ~VKeyRecord::kPinMask) | own_pins,
                  std::memory_order_release);
    if (v.opens.empty()) return;
    const unsigned before = VKeyEmulation::current_rights(v);
    std::erase_if(v.opens, [&](const auto& o) {
      for (int i = 1; i <= open.n; ++i)
        if (open.entries[i].record == &v && open.entries[i].keep == 0 && open.entries[i].sequence == o.first)
          return false;
      return true;  // another thread's, gone with it
    });
    if (const unsigned after = VKeyEmulation::current_rights(v); after != before)
      (void)space_.enforce_locked(Tag::vkey(vkey), after, AddressSpace::kUnchecked);
  });
}

int VKeys::set(int vkey, unsigned rights) {
  if (!valid_rights(rights)) return -EINVAL;
  std::lock_guard lock(space_);
  VKeyRecord* v = table_.find(vkey);
  if (!v) return -EINVAL;
  if (v->pinned() || !v->opens.empty()) return -EBUSY;  // open in some thread
  const unsigned old = v->base;
  v->base = rights;
  // A cached vkey is evicted: its threads' register bits hold the old base,
  // while an evicted vkey's pages take the new one at once.
  if (const int slot = v->slot(); slot >= 0) {
    if (int r = cache_->evict_locked(slot); r < 0) {
      v->base = old;
      return r == -EAGAIN ? -EBUSY : r;
    }
    return 0;
  }
  if (int r = space_.enforce_locked(Tag::vkey(vkey), rights, static_cast<int>(old)); r < 0) {
    v->base = old;
    space_.enforce_locked(Tag::vkey(vkey), old, AddressSpace::kUnchecked);
    return r;
  }
  return 0;
}

int VKeys::get(int vkey) const {
  std::lock_guard lock(space_);
  const VKeyRecord* v = table_.find(vkey);
  return v ? static_cast<int>(v->base) : -EINVAL;
}

VKeyStats VKeys::stats() const {
  std::lock_guard lock(space_);
  VKeyStats st;
  if (cache_) cache_->stats_locked(st);
  st.live = table_.live_locked();
  return st;
}

int VKeys::set_capacity(int n) {
  if (n < 0 || n >= backend_.max_keys()) return -EINVAL;
  if (!cache_) return n == 0 ? 0 : -ENOTSUP;
  return cache_->set_capacity(n);
}

}  // namespace pkeys::core
