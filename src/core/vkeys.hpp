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
#include <cstdint>
#include <optional>

#include "backend/backend.hpp"
#include "core/address_space.hpp"
#include "core/key_table.hpp"
#include "core/vkey_cache.hpp"
#include "core/vkey_emulation.hpp"
#include "core/vkey_table.hpp"

namespace pkeys::core {

class VKeys final : public VKeyPieces, public KeyDonor {
 public:
  static constexpr int kMaxVKeys = VKeyTable::kMaxVKeys;
  static constexpr int kMaxNesting = 64;  // open vkeys per thread

  VKeys(backend::Backend& backend, AddressSpace& space);

  int create(unsigned rights);
  int destroy(int vkey);
  int protect(std::uintptr_t start, std::size_t len, int prot, int vkey);
  int begin(int vkey, unsigned rights);
  int end(int vkey);
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
  static int first_begin_in_thread() noexcept;

  backend::Backend& backend_;
  AddressSpace& space_;
  VKeyTable table_;
  std::optional<VKeyCache> cache_;  // backends with per-thread rights
  VKeyEmulation emulation_;
};

}  // namespace pkeys::core
