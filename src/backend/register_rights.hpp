// SPDX-License-Identifier: MIT
// The rights switch of a backend whose rights are the calling thread's
// register (x86 PKU: PKRU), inline, for the hot paths: pkey_set and
// pkey_get run these without the Runtime, the Backend or a lock, for the
// keys the core lists in KeyTable::register_fields_not_held_word()
// (allocated to the program, on a backend whose rights_in_register() is
// true and whose CPU has BMI1: owned_switch_limit_word), and a cached
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

// x rotated left by n modulo 32: ROL itself (C++'s rotations spend an AND
// on the count).
[[gnu::always_inline]] inline std::uint32_t register_rotate_left(std::uint32_t x, unsigned n) noexcept {
  __asm__("roll %%cl, %[x]" : [x] "+r"(x) : "c"(n) : "cc");
  return x;
}

// The bits of the register that `key`'s rights leave alone: ~(3 << shift)
// as a rotation, one instruction. Defined for any key.
[[gnu::always_inline]] inline std::uint32_t register_keep_mask(int key) noexcept {
  return register_rotate_left(~3u, PKEYS_PKRU_SHIFT(key));
}

// Rights (at most 3) in `key`'s place: rights << shift for a key 0-15, and
// defined for any key (a rotation, modulo 32).
[[gnu::always_inline]] inline std::uint32_t register_rights_bits(int key, unsigned rights) noexcept {
  return register_rotate_left(rights, PKEYS_PKRU_SHIFT(key));
}

// `key`'s rights := `rights` (PKEY_DISABLE_*, checked by the caller) in
// the calling thread: a restartable switch (pkeys/pkru.h).
[[gnu::always_inline]] inline void register_set_rights(int key, unsigned rights) noexcept {
  pkeys_pkru_update(register_keep_mask(key), rights << PKEYS_PKRU_SHIFT(key));
}

// register_set_rights, for a key below `*limit` whose bits are clear in
// `*not_held` (the program holds the key: KeyTable's
// owned_switch_limit_word and register_fields_not_held_word), else nothing
// changes (not_owned). A free sets the key's bits, then resets the number
// in the threads whose PKRU copy says they hold rights on it. So the bits
// are tested twice: inside the restartable block (a reset that lands there
// sends the switch back to the test), and again after the WRPKRU (a free
// that set them while this thread was stopped inside the block, in a
// handler or by a debugger, found the copy not yet changed and did not
// reset it: the switch then takes its own rights back). The copy's last
// edit is a locked instruction, so that either the free sees the new copy
// or this test sees the bits set. Each test is one ANDN of the keep mask
// with the word in memory (BMI1: the limit is 0 on a CPU without it); the
// first leaves ECX 0 for RDPKRU and WRPKRU, the second leaves the 0 that
// `done` returns. The limit's compare is the range check.
// `bits` is register_rights_bits(key, rights) (by the caller, so that a
// caller's fallback can turn it back rather than keep a copy alive).
// What register_set_bits_if_owned did, and with done, 0.
enum class OwnedSwitch { done, not_owned, freed_meanwhile };
struct OwnedSwitchResult {
  OwnedSwitch what;
  int zero;
};

// After freed_meanwhile: the rights the switch wrote, taken back (out of
// line, so that the hot path keeps nothing alive for it).
[[gnu::noinline, gnu::cold]] inline void register_take_back_rights(int key) noexcept {
  register_set_rights(key, 0x1 /* PKEY_DISABLE_ACCESS */);
}

// The owned switches' write, between their two ownership tests: PKRU and
// the thread's copy := (x & keep) | set, the copy's last edit locked (see
// above), the WRPKRU at label 2. ECX is 0 when it starts.
#define PKEYS_OWNED_SWITCH_WRITE_ASM_                                      \
  ".byte 0x0f,0x01,0xee\n\t" /* RDPKRU: eax = PKRU, edx = 0 */            \
  "andl %[keep], %%eax\n\t"                                                \
  "andl %[keep], %%fs:(%[copy])\n\t"                                       \
  "orl %[set], %%eax\n\t"                                                  \
  "lock orl %[set], %%fs:(%[copy])\n\t"                                    \
  "2: .byte 0x0f,0x01,0xef\n\t" /* WRPKRU */

[[gnu::always_inline]] inline OwnedSwitchResult register_set_bits_if_owned(int key, std::uint32_t bits,
                                                                    const std::uint32_t* limit,
                                                                    const std::uint32_t* not_held) noexcept {
  const std::uint32_t keep = register_keep_mask(key);
  int zero;
  __asm__ goto(
      "cmpl %[limit], %[key]\n\t"
      "jae %l[not_owned]\n\t"
      "1: andnl %[not_held], %[keep], %%ecx\n\t" /* ecx = the key's bits in *not_held */
      "jnz %l[not_owned]\n\t"
      PKEYS_OWNED_SWITCH_WRITE_ASM_
      "andnl %[not_held], %[keep], %%eax\n\t"
      "jnz %l[freed_meanwhile]\n\t"
      PKEYS_PKRU_SWITCH_RECORDS_ASM_
      : "=&a"(zero)  // early: eax is scratch from the first test on
      : [limit] "m"(*limit), [key] "r"(key), [not_held] "m"(*not_held), [keep] "r"(keep), [set] "r"(bits),
        [copy] "r"(pkeys_thread_pkru_offset_())
      : "rcx", "rdx", "memory", "cc"
      : not_owned, freed_meanwhile);
  return {OwnedSwitch::done, zero};
freed_meanwhile:
  return {OwnedSwitch::freed_meanwhile, -1};  // the caller calls register_take_back_rights
not_owned:
  return {OwnedSwitch::not_owned, -1};
}

// register_set_bits_if_owned's switch for any x86-64 CPU (no BMI1, no
// limit), for the checked path, which every call takes where the inline
// one may not run: each test is a TEST of the key's field (one more
// instruction). `key` is 1..15, `rights` valid (checked by the caller).
[[gnu::always_inline]] inline OwnedSwitch register_set_rights_if_held(int key, unsigned rights,
                                                                const std::uint32_t* not_held) noexcept {
  const std::uint32_t keep = register_keep_mask(key);
  __asm__ goto(
      "1: testl %[field], %[not_held]\n\t"
      "jnz %l[not_owned]\n\t"
      "xorl %%ecx, %%ecx\n\t"
      PKEYS_OWNED_SWITCH_WRITE_ASM_
      "testl %[field], %[not_held]\n\t"
      "jnz %l[freed_meanwhile]\n\t"
      PKEYS_PKRU_SWITCH_RECORDS_ASM_
      :
      : [not_held] "m"(*not_held), [field] "r"(~keep), [keep] "r"(keep),
        [set] "r"(register_rights_bits(key, rights)), [copy] "r"(pkeys_thread_pkru_offset_())
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

// register_get_rights, for a key below `*limit` whose bits are clear in
// `*not_held` (as register_set_bits_if_owned), else what `otherwise()`
// returns (called from the branch itself, so that the hot path merges with
// no other path and tests nothing twice). One BEXTR takes the
// key's bits of the word (0 when held, which is the ECX that RDPKRU needs),
// one more the key's rights from PKRU, with the same control word.
template <class Otherwise>
[[gnu::always_inline]] inline int register_get_rights_if_owned(int key, const std::uint32_t* limit,
                                                            const std::uint32_t* not_held,
                                                            Otherwise otherwise) noexcept {
  int rights;
  std::uint32_t control;  // BEXTR's: 2 bits from bit 2 * key
  __asm__ goto(
      "cmpl %[limit], %[key]\n\t"
      "jae %l[not_owned]\n\t"
      "leal 0x200(,%q[key],2), %[control]\n\t"
      "bextrl %[control], %[not_held], %%ecx\n\t"
      "jnz %l[not_owned]\n\t"
      ".byte 0x0f,0x01,0xee\n\t" /* RDPKRU: eax = PKRU, edx = 0 */
      "bextrl %[control], %%eax, %%eax\n\t"
      : "=&a"(rights), [control] "=&r"(control)
      : [limit] "m"(*limit), [key] "r"(key), [not_held] "m"(*not_held)
      : "rcx", "rdx", "cc"
      : not_owned);
  return rights;
not_owned:
  return otherwise();
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
