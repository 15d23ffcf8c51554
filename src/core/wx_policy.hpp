// SPDX-License-Identifier: MIT
// The process-wide W^X policy for pkeys' own protection calls.
#pragma once

#include <cstddef>

namespace pkeys::core {

enum class WxPolicy { off = 0, log = 1, deny = 2 };  // PKEYS_WX_*

// From PKEYS_WX=off|log|deny at first use (unset or empty: off); any other
// value means deny, reported once on stderr (fail closed).
WxPolicy wx_policy() noexcept;
void set_wx_policy(WxPolicy p) noexcept;

// 0 when `prot` may be applied by `caller`, -EACCES when the policy denies
// writable-and-executable; under "log" it reports the call on stderr.
// PROT_READ|PROT_WRITE counts as writable and executable while the process
// has READ_IMPLIES_EXEC (the kernel then adds PROT_EXEC).
// Async-signal-safe: no allocation, no lock.
bool read_implies_exec() noexcept;
int check_wx(const char* caller, const void* addr, std::size_t len, int prot) noexcept;

}  // namespace pkeys::core
