// SPDX-License-Identifier: MIT
// VKeyEmulation: vkeys on a backend without per-thread rights. There is no
// cache: every vkey is enforced with page protections, and a begin sets
// its rights process-wide while any thread has it open (the newest begin
// still open rules, else the base rights). Everything under the lock.
#pragma once

#include <cstdint>

#include "core/address_space.hpp"
#include "core/vkey_table.hpp"

namespace pkeys::core {

class VKeyEmulation {
 public:
  explicit VKeyEmulation(AddressSpace& space) noexcept : space_(space) {}

  // The rights in force now.
  static unsigned current_rights(const VKeyRecord& v) noexcept {
    return v.opens.empty() ? v.base : v.opens.back().second;
  }
  // A begin of `vkey` with `rights`; its sequence number for close.
  int open_locked(int vkey, VKeyRecord& v, unsigned rights, std::uint64_t* sequence);
  // Ends the begin numbered `sequence`.
  int close_locked(int vkey, VKeyRecord& v, std::uint64_t sequence);

 private:
  AddressSpace& space_;
  std::uint64_t open_sequence_ = 0;
};

}  // namespace pkeys::core
