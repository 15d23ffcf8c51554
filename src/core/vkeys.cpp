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
constinit thread_local OpenTop t_open_top __attribute__((tls_model("initial-exec")));
constinit OpenVKey g_no_open_vkey{0, OpenVKey::kNotCached, nullptr, 0, 0};
}  // namespace vkeys_detail

using vkeys_detail::OpenStack;
using vkeys_detail::OpenTop;
using vkeys_detail::OpenVKey;
using vkeys_detail::open_count;
using vkeys_detail::restore_cached;
using vkeys_detail::t_open;
using vkeys_detail::t_open_top;

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
  try {
    while (open_count() > 0) g_vkeys->end(static_cast<int>(t_open_top.top->vkey));
  } catch (...) {  // the lock failed: nothing better to do as the thread dies
  }
  t_open_top.limit = nullptr;  // a begin from a later destructor sets this up again
}

}  // namespace

int VKeys::first_begin_in_thread() noexcept {
  OpenTop& open = t_open_top;
  if (open.limit) return -EMFILE;  // set up: the stack is full
  if (g_have_exit_key && ::pthread_setspecific(g_exit_key, reinterpret_cast<void*>(1)) != 0) return -ENOMEM;
  if (open.top == &vkeys_detail::g_no_open_vkey) {
    t_open.entries[0] = vkeys_detail::g_no_open_vkey;  // the thread's own sentinel
    open.top = &t_open.entries[0];
  }
  open.limit = &t_open.entries[kMaxNesting];
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
  const int slot = v->slot;
  std::uint64_t last_state;
  // May throw, before any change: then the slot stays the vkey's.
  if (int r = table_.destroy_locked(vkey, *v, &last_state); r < 0) return r;
  v->slot = -1;
  if (cache_ && slot >= 0) cache_->drop_locked(slot, last_state);
  return 0;
}

int VKeys::protect_piece_locked(int vkey, std::uintptr_t start, std::size_t len, int prot) noexcept {
  const VKeyRecord* v = table_.find(vkey);
  if (!v) return -EINVAL;
  if (const int slot = v->slot; slot >= 0) return backend_.protect(start, len, prot, cache_->hardware_key(slot));
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
  OpenTop& open = t_open_top;
  if (reinterpret_cast<std::uintptr_t>(open.top) >= reinterpret_cast<std::uintptr_t>(open.limit))
    if (int r = first_begin_in_thread(); r < 0) return r;
  if (!cache_) {
    std::lock_guard lock(space_);
    if (!table_.find(vkey)) return -EINVAL;
    std::uint64_t sequence;
    if (int r = emulation_.open_locked(vkey, *v, rights, &sequence); r < 0) return r;
    open.top[1] = OpenVKey{static_cast<std::uint32_t>(vkey), OpenVKey::kNotCached, v, 0, sequence};
    ++open.top;
    return 0;
  }
  if (!VKeyCache::try_pin(*v))
    if (int r = cache_->pin(vkey, *v); r < 0) return r;
  // Pinned: the slot's hardware key cannot change until end.
  open.top[1].set_cached_tag(static_cast<std::uint32_t>(vkey));
  push_cached(open, open.top, v, rights);
  return 0;
}

int VKeys::end_slow(int vkey) {
  OpenStack& open = t_open;
  const int n = open_count();
  int i = n;
  while (i > 0 && open.entries[i].vkey != static_cast<std::uint32_t>(vkey)) --i;
  if (i == 0) return -EINVAL;  // not open in this thread
  const OpenVKey e = open.entries[i];
  for (int j = i; j < n; ++j) open.entries[j] = open.entries[j + 1];
  --t_open_top.top;
  if (!e.cached()) {  // the emulation's
    std::lock_guard lock(space_);
    return emulation_.close_locked(vkey, *e.record, e.sequence);
  }
  restore_cached(e);
  VKeyCache::unpin(*e.record);
  return 0;
}

void VKeys::close_above(int depth) noexcept {
  OpenTop& open = t_open_top;
  if (depth < 0) depth = 0;
  while (open_count() > depth) {
    const OpenVKey e = *open.top;
    if (e.cached()) {
      --open.top;
      restore_cached(e);
      VKeyCache::unpin(*e.record);
      continue;
    }
    // The emulation's: its close needs the lock, which the code the jump
    // leaves (or a thread pkeys waits for) may hold.
    if (!space_.lock_from_signal_handler()) return;
    --open.top;
    (void)emulation_.close_locked(static_cast<int>(e.vkey), *e.record, e.sequence);
    space_.unlock();
  }
}

void VKeys::after_fork_in_child_locked() noexcept {
  const OpenStack& open = t_open;
  const int n = open_count();
  table_.for_each_live_locked([&](int vkey, VKeyRecord& v) {
    std::uint64_t own_pins = 0;
    for (int i = 1; i <= n; ++i)
      if (open.entries[i].record == &v && open.entries[i].cached()) ++own_pins;
    v.state.store((v.state.load(std::memory_order_relaxed) & ~VKeyRecord::kPinMask) | own_pins,
                  std::memory_order_release);
    if (v.opens.empty()) return;
    const unsigned before = VKeyEmulation::current_rights(v);
    std::erase_if(v.opens, [&](const auto& o) {
      for (int i = 1; i <= n; ++i)
        if (open.entries[i].record == &v && !open.entries[i].cached() && open.entries[i].sequence == o.first)
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
  if (const int slot = v->slot; slot >= 0) {
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
