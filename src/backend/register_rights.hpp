// SPDX-License-Identifier: MIT
// The rights switch of a backend whose rights are the calling thread's
// register (x86 PKU: PKRU), inline, for the hot paths: pkey_set and
// pkey_get run these without the Runtime, the Backend or a lock, for the
// keys the core lists in KeyTable::register_keys() (allocated to the
// program, on a backend whose rights_in_register() is true), and a cached
// vkey's begin and end for its cache key (the cache exists only on such a
// backend). Such a backend's set_rights and get_rights are these very
// functions. Each switch is restartable and keeps the thread's PKRU copy
// (pkeys_pkru_update, pkeys/pkru.h).
#pragma once

#include <cstdint>

#include "pkeys/pkru.h"

namespace pkeys::backend {

// Keys 0..kRegisterKeys-1 have rights in the register (PKRU: 16).
inline constexpr int kRegisterKeys = 16;

// The bits of the register that `key`'s rights leave alone: ~(3 << shift)
// as a rotation, one instruction (the pattern GCC and Clang turn into ROL).
[[gnu::always_inline]] inline std::uint32_t register_keep_mask(int key) noexcept {
  const unsigned shift = PKEYS_PKRU_SHIFT(key);
  return (~3u << shift) | (~3u >> ((0u - shift) & 31u));
}

// `key`'s rights := `rights` (PKEY_DISABLE_*, checked by the caller) in
// the calling thread: a restartable switch (pkeys/pkru.h).
[[gnu::always_inline]] inline void register_set_rights(int key, unsigned rights) noexcept {
  pkeys_pkru_update(register_keep_mask(key), rights << PKEYS_PKRU_SHIFT(key));
}

// register_set_rights, only while `key`'s field of `*owned_fields` is set
// (the program holds the key: KeyTable::register_key_fields_word), else
// nothing changes (not_owned). A free clears the field, then resets the
// number in the threads whose PKRU copy says they hold rights on it. So
// the field is tested twice: inside the restartable block (a reset that
// lands there sends the switch back to the test), and again after the
// WRPKRU (a free that cleared it while this thread was stopped inside the
// block, in a handler or by a debugger, found the copy not yet changed and
// did not reset it: the switch then takes its own rights back). The copy's
// last edit is a locked instruction, so that either the free sees the new
// copy or this test sees the cleared field.
// The switch sets the key's two bits, then flips those the new rights
// clear: with the field (3 << shift) in a register, each ownership test is
// one TEST against memory, and both edits are idempotent from label 1, so
// a restart anywhere in the block ends the same.
// `flip` is (rights ^ 3) << shift (computed by the caller, so that a
// caller's fallback can shift back rather than keep a copy alive).
// What register_set_flip_if_owned did.
enum class OwnedSwitch { done, not_owned, freed_meanwhile };

// After freed_meanwhile: the rights the switch wrote, taken back (out of
// line, so that the hot path keeps nothing alive for it).
[[gnu::noinline, gnu::cold]] inline void register_take_back_rights(int key) noexcept {
  register_set_rights(key, 0x1 /* PKEY_DISABLE_ACCESS */);
}

// `key`'s two bits in the register: 3 << shift.
[[gnu::always_inline]] inline std::uint32_t register_field(int key) noexcept {
  return 3u << PKEYS_PKRU_SHIFT(key);
}

[[gnu::always_inline]] inline OwnedSwitch register_set_flip_if_owned(int key, std::uint32_t flip,
                                                              const std::uint32_t* owned_fields) noexcept {
  const std::uint32_t field = register_field(key);
  __asm__ goto(
      "1: testl %[field], %[owned]\n\t"
      "jz %l[not_owned]\n\t"
      "xorl %%ecx, %%ecx\n\t"
      ".byte 0x0f,0x01,0xee\n\t" /* RDPKRU: eax = PKRU, edx = 0 */
      "orl %[field], %%eax\n\t"
      "orl %[field], %%fs:(%[copy])\n\t"
      "xorl %[flip], %%eax\n\t"
      "lock xorl %[flip], %%fs:(%[copy])\n\t"
      "2: .byte 0x0f,0x01,0xef\n\t" /* WRPKRU */
      "testl %[field], %[owned]\n\t"
      "jz %l[freed_meanwhile]\n\t"
      PKEYS_PKRU_SWITCH_RECORDS_ASM_
      :
      : [owned] "m"(*owned_fields), [field] "r"(field), [flip] "r"(flip),
        [copy] "r"(pkeys_thread_pkru_offset_())
      : "rax", "rcx", "rdx", "memory", "cc"
      : not_owned, freed_meanwhile);
  return OwnedSwitch::done;
freed_meanwhile:
  return OwnedSwitch::freed_meanwhile;  // the caller calls register_take_back_rights
not_owned:
  return OwnedSwitch::not_owned;
}

[[gnu::always_inline]] inline unsigned register_get_rights(int key) noexcept {
  return pkeys_pkru_rights(pkeys_rdpkru(), key);
}


// `key`'s access-disable bit: rights r are r * register_access_bit(key).
[[gnu::always_inline]] inline std::uint32_t register_access_bit(int key) noexcept {
  return 1u << PKEYS_PKRU_SHIFT(key);
}

// Gives the calling thread bits `set` (rights * access bit) on the key
// whose keep mask is `keep`; returns that key's bits as they were.
[[gnu::always_inline]] inline std::uint32_t register_exchange_bits(std::uint32_t keep, std::uint32_t set) noexcept {
  return pkeys_pkru_exchange(keep, set) & ~keep;
}

// Gives the calling thread `rights` (valid) on `key`, whose keep mask is
// `keep`, and returns that key's bits as they were, in place, for
// register_restore.
[[gnu::always_inline]] inline std::uint32_t register_exchange(int key, std::uint32_t keep, unsigned rights) noexcept {
  return pkeys_pkru_exchange(keep, rights << PKEYS_PKRU_SHIFT(key)) & ~keep;
}

// Puts back bits `saved` (from register_exchange) of the key whose keep
// mask is `keep`.
[[gnu::always_inline]] inline void register_restore(std::uint32_t keep, std::uint32_t saved) noexcept {
  pkeys_pkru_update(keep, saved);
}

}  // namespace pkeys::backend
