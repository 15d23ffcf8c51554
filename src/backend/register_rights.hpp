// SPDX-License-Identifier: MIT
// The rights switch of a backend whose rights are the calling thread's
// register (x86 PKU: PKRU), inline, for the C ABI's hot path: pkey_set and
// pkey_get run these without the Runtime, the Backend or a lock, for the
// keys the core lists in KeyTable::register_keys() (allocated to the
// program, on a backend whose rights_in_register() is true). Such a
// backend's set_rights and get_rights are these very functions.
#pragma once

#include "pkeys/pkru.h"

namespace pkeys::backend {

// Keys 0..kRegisterKeys-1 have rights in the register (PKRU: 16).
inline constexpr int kRegisterKeys = 16;

// `key`'s rights := `rights` (PKEY_DISABLE_*, checked by the caller) in
// the calling thread: a restartable switch (pkeys/pkru.h).
[[gnu::always_inline]] inline void register_set_rights(int key, unsigned rights) noexcept {
  const unsigned shift = PKEYS_PKRU_SHIFT(key);
  // ~(3 << shift) as a rotation: one instruction (the pattern GCC and Clang
  // turn into ROL).
  pkeys_pkru_update((~3u << shift) | (~3u >> ((0u - shift) & 31u)), rights << shift);
}

[[gnu::always_inline]] inline unsigned register_get_rights(int key) noexcept {
  return pkeys_pkru_rights(pkeys_rdpkru(), key);
}

}  // namespace pkeys::backend
