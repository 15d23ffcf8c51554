// SPDX-License-Identifier: MIT
// VKeys: any number of virtual protection keys over the hardware's few.
//
// A virtual key (vkey) tags ranges and has process-wide rights (its
// "base"); a thread opens it with begin(vkey, rights) and closes it with
// end. An open vkey needs a hardware key: pkeys keeps a cache of hardware
// keys it allocates itself (never a number pkey_alloc handed out, and it
// gives an unpinned one back when pkey_alloc would otherwise fail). A vkey
// that holds one switches at hardware speed: begin and end only pin it and
// write the calling thread's rights register, with no lock. When the cache is full,
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
//
// Rooms: the id table (vkey_table.hpp), the hardware-key cache
// (vkey_cache.hpp), the emulated strategy (vkey_emulation.hpp); this front
// keeps each thread's open vkeys and chooses the strategy.
#pragma once

#include <signal.h>

#include <cstddef>
#include <cstring>
#include <atomic>
#include <cstdint>
#include <optional>

#include "backend/backend.hpp"
#include "backend/register_rights.hpp"
#include "core/address_space.hpp"
#include "core/key_table.hpp"
#include "core/vkey_cache.hpp"
#include "core/vkey_emulation.hpp"
#include "core/vkey_table.hpp"

namespace pkeys::core {

namespace vkeys_detail {

// A vkey the calling thread has open.
struct OpenVKey {
  static constexpr std::uint32_t kNotCached = 1u << 31;
  // The tag, two halves of one 64-bit word (tag()), which end compares with
  // its zero-extended vkey at once: the vkey, and `not_cached`, 0 in a
  // cached vkey's entry, kNotCached in the emulation's entries and the
  // sentinels, which no end matches.
  std::uint32_t vkey = 0;
  std::uint32_t not_cached = 0;
  VKeyRecord* record = nullptr;
  // Cached: the register before begin (its hardware key's bits are put
  // back, record->key_bits).
  std::uint32_t saved = 0;
  std::uint64_t sequence = 0;  // emulation: this begin's entry in VKeyRecord::opens

  std::uint64_t tag() const noexcept {
    std::uint64_t t;
    std::memcpy(&t, &vkey, sizeof t);
    return t;
  }
  void set_cached_tag(std::uint32_t id) noexcept {  // one store
    const std::uint64_t t = id;
    std::memcpy(&vkey, &t, sizeof t);
  }
  bool cached() const noexcept { return not_cached == 0; }
};
static_assert(offsetof(OpenVKey, not_cached) == offsetof(OpenVKey, vkey) + 4 && sizeof(OpenVKey) == 32);

// The sentinel every thread's top points at before its first begin (never
// written: begin's limit test fails while it is the top).
extern constinit OpenVKey g_no_open_vkey [[gnu::visibility("hidden")]];

// The vkeys the calling thread has open: entries[1..n], innermost last;
// entries[0] is a sentinel that matches no end, set at the first begin.
struct OpenStack {
  static constexpr int kMaxNesting = 64;
  OpenVKey entries[kMaxNesting + 1];
};
// Its top, a pointer the hot paths follow with no index and no TLS
// address arithmetic. Constant-initialised, so that the hot path reaches
// both without a TLS wrapper call.
struct OpenTop {
  // The innermost entry: &g_no_open_vkey before the thread's first begin,
  // then t_open.entries[n].
  OpenVKey* top = &g_no_open_vkey;
  // &entries[kMaxNesting] once the thread is set to close its vkeys when
  // it exits; null before, so that one compare in begin covers both.
  OpenVKey* limit = nullptr;
};
extern constinit thread_local OpenStack t_open __attribute__((tls_model("initial-exec")));
extern constinit thread_local OpenTop t_open_top __attribute__((tls_model("initial-exec")));

// How many vkeys the calling thread has open. Signal-safe.
inline int open_count() noexcept {
  const OpenVKey* top = t_open_top.top;
  return top == &g_no_open_vkey ? 0 : static_cast<int>(top - t_open.entries);
}

// A cached vkey's entry `e` closes: its hardware key's bits as they were.
[[gnu::always_inline]] inline void restore_cached(const OpenVKey& e) noexcept {
  const VKeyRecord& v = *e.record;
  backend::register_restore(v.keep, e.saved & v.key_bits);
}

}  // namespace vkeys_detail

class VKeys final : public VKeyPieces, public KeyDonor {
 public:
  static constexpr int kMaxVKeys = VKeyTable::kMaxVKeys;
  static constexpr int kMaxNesting = vkeys_detail::OpenStack::kMaxNesting;  // open vkeys per thread

  VKeys(backend::Backend& backend, AddressSpace& space);

  int create(unsigned rights);
  int destroy(int vkey);
  int protect(std::uintptr_t start, std::size_t len, int prot, int vkey);
  int begin(int vkey, unsigned rights);
  int end(int vkey);
  // For a jump back to a recovery point (pkeys_siglongjmp): how many vkeys
  // the calling thread has open, and closing those it opened after it had
  // `depth` open, innermost first, as their ends would. Signal-safe: a
  // cached vkey closes without a lock; an emulated one (whose rights are
  // process-wide) only if pkeys' lock is free, else it stays open.
  static int open_depth() noexcept { return vkeys_detail::open_count(); }
  void close_above(int depth) noexcept;
  // In the child of fork, lock held: only the forking thread exists. The
  // other threads' pins and opens (their begins without an end) are
  // dropped, so that no vkey stays pinned for good and an emulated vkey's
  // pages return to the rights the child's own opens give.
  void after_fork_in_child_locked() noexcept;

  // The hot path of begin and end, inline, for the C ABI: a cached vkey
  // (x86-pku) opened or closed with no lock, no call, no errno and no
  // Runtime (the records are process-wide: vkey_table.hpp). Either it did
  // the whole call and returns 0, or it changed nothing and returns
  // kSlowPath, and the caller calls begin/end, which check everything and
  // give the result (0 or -errno). Everything not plainly valid takes the
  // slow path: bad rights or vkey, no vkey layer yet, a vkey not pinnable
  // (not cached, being evicted or destroyed), the thread's first begin (or
  // its stack full), an end that is not of the thread's innermost cached
  // vkey, and every vkey on the emulation (nothing is ever cached there,
  // so this never switches a register there). Not async-signal-safe, like
  // begin and end.
  static constexpr int kSlowPath = 1;
  static int begin_fast(int vkey, unsigned rights) noexcept {
    const auto id = static_cast<std::uint32_t>(vkey);
    if (!valid_rights(rights)) [[unlikely]]
      return kSlowPath;
    if (!below_vkey_id_limit(id)) [[unlikely]]  // else no record (or no vkey layer yet)
      return kSlowPath;
    vkeys_detail::OpenTop& open = vkeys_detail::t_open_top;
    vkeys_detail::OpenVKey* top = open.top;
    if (reinterpret_cast<std::uintptr_t>(top) >= reinterpret_cast<std::uintptr_t>(open.limit)) [[unlikely]]
      return kSlowPath;
    // The entry above the top is no one's until the top moves: writing it
    // before the pin (even for a begin that then takes the slow path) lets
    // the id's register be scaled in place after the store.
    top[1].set_cached_tag(id);
    VKeyRecord* v = g_vkey_records + id;
    std::uint64_t s = v->state.load(std::memory_order_acquire);
    if (!VKeyRecord::pinnable(s) ||
        !v->state.compare_exchange_strong(s, s + VKeyRecord::kPinAndUse, std::memory_order_acq_rel)) [[unlikely]]
      return kSlowPath;
    push_cached(open, top, v, rights);
    return 0;
  }
  static int end_fast(int vkey) noexcept {
    vkeys_detail::OpenTop& open = vkeys_detail::t_open_top;
    vkeys_detail::OpenVKey* top = open.top;
    if (top->tag() != static_cast<std::uint32_t>(vkey)) [[unlikely]]
      return kSlowPath;
    VKeyRecord* v = top->record;  // one load: the switch clobbers memory
    backend::register_restore(v->keep, top->saved & v->key_bits);
    // Popped before the unpin, as end_slow and close_above do: a jump from
    // a handler that lands between the two then leaves the pin behind,
    // where the other order had it close the entry again and unpin twice.
    --open.top;  // one subtract from memory, as in push_cached
    VKeyCache::unpin(*v);
    return 0;
  }
  int set(int vkey, unsigned rights);
  int get(int vkey) const;
  VKeyStats stats() const;
  int set_capacity(int n);

  // VKeyPieces: a cached vkey's pieces carry its hardware key, an evicted
  // or emulated one's the page protection of its rights.
  int protect_piece_locked(int vkey, std::uintptr_t start, std::size_t len, int prot) noexcept override;
  // KeyDonor: the cache gives a hardware key back.
  bool give_back_key_locked() override { return cache_ && cache_->give_back_key_locked(); }
  // Bit k set when the cache holds hardware key k. Signal-safe.
  std::uint64_t hardware_key_mask() const noexcept { return cache_ ? cache_->hardware_key_mask() : 0; }
  // Under the lock: the vkey whose cached hardware key is `hw_key`, or -1.
  int vkey_of_hardware_key_locked(int hw_key) const noexcept {
    return cache_ ? cache_->vkey_of_hardware_key_locked(hw_key) : -1;
  }

 private:
  // The calling thread's first begin: its open vkeys will be closed when it
  // exits. -EMFILE when it is set up already (its stack is full).
  int first_begin_in_thread() noexcept;
  // Everything begin_fast and end_fast leave (out of line, so that the
  // fast paths save no registers).
  [[gnu::noinline]] int begin_slow(int vkey, unsigned rights);
  [[gnu::noinline]] int end_slow(int vkey);
  // Pinned `v`, its tag written above `top`: push its entry, switch the
  // thread's rights.
  // (The vkey and record are stored before the switch: fewer values live
  // across it; the top moves last, so that a jump's close_above from a
  // signal handler sees the entry only once it is whole.)
  static void push_cached(vkeys_detail::OpenTop& open, vkeys_detail::OpenVKey* top, VKeyRecord* v,
                          unsigned rights) noexcept {
    vkeys_detail::OpenVKey* e = top + 1;
    e->record = v;
    e->saved = pkeys_pkru_exchange(v->keep, rights * v->access_bit);
    ++open.top;  // re-read after the switch (it clobbers memory): one add to memory
  }

  backend::Backend& backend_;
  AddressSpace& space_;
  VKeyTable table_;
  std::optional<VKeyCache> cache_;  // backends with per-thread rights
  VKeyEmulation emulation_;
};

}  // namespace pkeys::core
