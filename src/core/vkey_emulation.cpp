// SPDX-License-Identifier: MIT
#include "core/vkey_emulation.hpp"

#include <vector>

namespace pkeys::core {

int VKeyEmulation::open_locked(int vkey, VKeyRecord& v, unsigned rights, std::uint64_t* sequence) {
  v.opens.reserve(v.opens.size() + 1);  // may throw: before any page changes
  if (int r = space_.enforce_locked(Tag::vkey(vkey), rights, static_cast<int>(current_rights(v))); r < 0) return r;
  *sequence = ++open_sequence_;
  v.opens.emplace_back(*sequence, rights);
  return 0;
}

int VKeyEmulation::close_locked(int vkey, VKeyRecord& v, std::uint64_t sequence) {
  // Drop this begin; the newest begin still open rules, else the
  // process-wide rights.
  const unsigned before = current_rights(v);
  std::erase_if(v.opens, [&](const auto& o) { return o.first == sequence; });
  const unsigned after = current_rights(v);
  return after == before ? 0 : space_.enforce_locked(Tag::vkey(vkey), after, static_cast<int>(before));
}

}  // namespace pkeys::core
