// SPDX-License-Identifier: MIT
// The opt-in SIGSEGV handler behind pkeys_diagnose_faults.
#pragma once

namespace pkeys::core {

// Installs (true) or removes (false) the handler. 0 or -errno.
int enable_fault_diagnostics(bool enable);

}  // namespace pkeys::core
