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
  VKeyRecord* record;
  int vkey;
  // Cached vkey: the register bits its hardware key leaves alone, and that
  // key's bits before begin. 0: the emulation's entry (or the sentinel).
  std::uint32_t keep;
  std::uint32_t saved;
  std::uint64_t sequence;  // emulation: this begin's entry in VKeyRecord::opens
};

// The vkeys the calling thread has open: entries[1..n], innermost last;
// entries[0] is a sentinel that matches no end. Constant-initialised, so
// that the hot path reaches it without a TLS wrapper call.
struct OpenStack {
  static constexpr int kMaxNesting = 64;
  int n = 0;
  // kMaxNesting once the thread is set to close its vkeys when it exits;
  // 0 before, so that one compare in begin covers both.
  int limit = 0;
  std::atomic<std::uint64_t>* hits = nullptr;  // the cache's counter for this thread
  OpenVKey entries[kMaxNesting + 1] = {};
};
extern constinit thread_local OpenStack t_open __attribute__((tls_model("initial-exec")));

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
  static int open_depth() noexcept { return vkeys_detail::t_open.n; }
  void close_above(int depth) noexcept;
  // In the child of fork, lock held: only the forking thread exists. The
  // other threads' pins and opens (their begins without an end) are
  // dropped, so that no vkey stays pinned for good and an emulated vkey's
  // pages return to the rights the child's own opens give.
  void after_fork_in_child_locked() noexcept;

  // The hot path of begin and end, inline, for the C ABI: a cached vkey
  // (x86-pku) opened or closed with no lock, no call and no errno. Either
  // it did the whole call and returns 0, or it changed nothing and returns
  // kSlowPath, and the caller calls begin/end, which check everything and
  // give the result (0 or -errno). Everything not plainly valid takes the
  // slow path: bad rights or vkey, a vkey not cached, being evicted or
  // destroyed, the thread's first begin (or its stack full), an end that is
  // not of the thread's innermost vkey, and every vkey on the emulation
  // (nothing is ever cached there, so this never switches a register
  // there). Not async-signal-safe, like begin and end.
  static constexpr int kSlowPath = 1;
  int begin_fast(int vkey, unsigned rights) noexcept {
    VKeyRecord* v = table_.record_of(vkey);
    vkeys_detail::OpenStack& open = vkeys_detail::t_open;
    const int n = open.n;
    if (!v || !valid_rights(rights) || n >= open.limit) [[unlikely]]
      return kSlowPath;
    std::uint64_t s = v->state.load(std::memory_order_acquire);
    if (!VKeyRecord::pinnable(s) || !v->state.compare_exchange_strong(s, s + 1, std::memory_order_acq_rel))
        [[unlikely]]
      return kSlowPath;
    open.hits->fetch_add(1, std::memory_order_relaxed);
    push_cached(open, n, v, vkey, VKeyRecord::hw_key_of(s), rights);
    return 0;
  }
  int end_fast(int vkey) noexcept {
    vkeys_detail::OpenStack& open = vkeys_detail::t_open;
    const int n = open.n;
    vkeys_detail::OpenVKey& e = open.entries[n];
    if (e.vkey != vkey || e.keep == 0) [[unlikely]]
      return kSlowPath;
    backend::register_restore(e.keep, e.saved);
    VKeyCache::unpin(*e.record);
    open.n = n - 1;
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
  // Pinned `v` (cached in `hw_key`): switch the thread's rights, push.
  // (The entry is filled before the switch: fewer values live across it.)
  void push_cached(vkeys_detail::OpenStack& open, int n, VKeyRecord* v, int vkey, int hw_key,
                   unsigned rights) noexcept {
    cache_->touch(*v);
    vkeys_detail::OpenVKey& e = open.entries[n + 1];
    (void)hw_key;
    const std::uint32_t keep = v->keep;
    e.record = v;
    e.vkey = vkey;
    e.keep = keep;
    e.saved = backend::register_exchange_bits(keep, rights * v->access_bit);
    open.n = n + 1;
  }

  backend::Backend& backend_;
  AddressSpace& space_;
  VKeyTable table_;
  std::optional<VKeyCache> cache_;  // backends with per-thread rights
  VKeyEmulation emulation_;
};

}  // namespace pkeys::core
