// SPDX-License-Identifier: MIT
// What a backend can do, as constants: each backend states its features in
// a static constexpr `kFeatures`, checked at compile time (see
// backend_concept.hpp). The bits are the public PKEYS_CAP_* values, so
// pkeys_capabilities() reports them as they are.
#pragma once

#include <sys/types.h>

namespace pkeys::backend {

enum Feature : unsigned {
  // The CPU enforces a page's key: a plain mprotect keeps it, and the
  // kernel reports which key each mapping carries (smaps ProtectionKey).
  kHardware = 0x1u,  // PKEYS_CAP_HARDWARE
  // Each thread has its own rights word, written without a lock; signal
  // frames carry it, so handlers and jumps must save and restore it.
  kPerThreadRights = 0x2u,  // PKEYS_CAP_PER_THREAD_RIGHTS
  // A page can be executable and unreadable (a key with access disabled).
  kExecuteOnly = 0x4u,  // PKEYS_CAP_EXECUTE_ONLY
  // A key fault names its key (si_pkey): no records needed to attribute it.
  kFaultPkey = 0x8u,  // PKEYS_CAP_FAULT_PKEY
};

constexpr unsigned kAllFeatures = kHardware | kPerThreadRights | kExecuteOnly | kFaultPkey;

// Whether a backend type states `f` among its features.
template <class B>
constexpr bool supports(Feature f) noexcept {
  return (B::kFeatures & f) != 0;
}

// Thread id 0 for Backend::set_rights_in: every thread of the process, the
// caller included. (The handshake's 0 means every thread but the caller:
// kOtherThreads in thread_signal.hpp.)
constexpr pid_t kAllThreads = 0;

}  // namespace pkeys::backend
