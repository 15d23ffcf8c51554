// SPDX-License-Identifier: MIT
// The obligations of a backend, checked at compile time (in the manner of
// snmalloc's pal_concept.h): each backend header ends with
// static_assert(KeyHardware<ItsBackend>).
//
// Every backend states its features as constants and implements the key
// operations; each feature obliges it to provide more, and its absence to
// provide something else:
//   kPerThreadRights  saving, restoring and adopting a thread's rights word
//                     (the defaults assume process-wide rights);
//   kFaultPkey        fault_key() from si_pkey (the default names none);
//   no kHardware      attach(PageProtections&): rights are enforced with
//                     page protections, which the core applies.
#pragma once

#include <concepts>
#include <cstdint>
#include <type_traits>

#include "backend/backend.hpp"

namespace pkeys::backend {
// True when B declares `member` itself rather than inheriting Backend's.
#define PKEYS_BACKEND_OVERRIDES(B, member) (!std::is_same_v<decltype(&B::member), decltype(&Backend::member)>)

template <class B>
concept KeyHardware =
    std::derived_from<B, Backend> && std::is_final_v<B> &&
    requires {
      { B::kFeatures } -> std::convertible_to<unsigned>;
      { B::kMaxKeys } -> std::convertible_to<int>;
      { B::kName } -> std::convertible_to<const char*>;
    } &&
    (B::kFeatures & ~kAllFeatures) == 0 && B::kMaxKeys > 1 && B::kMaxKeys <= 64 &&
    requires(B& b, const B& cb, int key, unsigned rights, std::uintptr_t addr, std::size_t len, int prot,
             pid_t tid, std::vector<pid_t>* missed, Backend::KeyCheck check) {
      { b.acquire_key(rights) } noexcept -> std::same_as<int>;
      { b.release_key(key) } noexcept -> std::same_as<int>;
      { b.protect(addr, len, prot, key) } noexcept -> std::same_as<int>;
      { b.set_rights(key, rights) } noexcept -> std::same_as<int>;
      { cb.get_rights(key) } noexcept -> std::same_as<unsigned>;
      { b.set_rights_in(tid, key, rights, missed, check) } noexcept -> std::same_as<int>;
    } &&
    // Per-thread rights live in signal frames and survive jumps: a backend
    // with them must say how to save, restore and adopt them.
    (!supports<B>(kPerThreadRights) ||
     (PKEYS_BACKEND_OVERRIDES(B, save_thread_rights) && PKEYS_BACKEND_OVERRIDES(B, restore_thread_rights) &&
      PKEYS_BACKEND_OVERRIDES(B, interrupted_rights) && PKEYS_BACKEND_OVERRIDES(B, adopt_interrupted_rights))) &&
    // A backend that claims si_pkey reads it.
    (!supports<B>(kFaultPkey) || PKEYS_BACKEND_OVERRIDES(B, fault_key)) &&
    // Without hardware, rights are page protections: the core must be told.
    (supports<B>(kHardware) || PKEYS_BACKEND_OVERRIDES(B, attach)) &&
    // Execute-only memory needs a key that denies reads but not execution.
    (!supports<B>(kExecuteOnly) || supports<B>(kHardware));

#undef PKEYS_BACKEND_OVERRIDES

}  // namespace pkeys::backend
