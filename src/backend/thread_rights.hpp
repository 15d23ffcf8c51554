// SPDX-License-Identifier: MIT
// The calling thread's rights register, switched inline: the non-virtual
// fast switch for the core's hot paths (a cached vkey's begin and end).
//
// Valid only on a backend whose features hold kHardware and
// kPerThreadRights, whose rights word is the CPU's register (on x86-64,
// x86-pku: PKRU). The caller must know that from its data, never try it:
// the core takes these paths only for a vkey the hardware-key cache
// loaded, and that cache exists only on such a backend.
//
// Each switch is a restartable PKRU read-modify-write that keeps the
// thread's copy (pkeys_pkru_update), like Backend::set_rights.
#pragma once

#include <cstdint>

#include "pkeys/pkru.h"

namespace pkeys::backend::thread_rights {

// The bits of the register that `key`'s rights leave alone.
inline std::uint32_t keep_mask(int key) noexcept { return ~(3u << PKEYS_PKRU_SHIFT(key)); }

// Gives the calling thread `rights` on `key`, whose keep_mask is `keep`;
// returns that key's bits as they were (in place, for restore). `rights`
// must be valid (0..3). pkeys_pkru_update's restartable switch (the same
// records, the same thread's copy) that also hands out the value it read:
// a handler that moves the thread back to the start reads it again.
__attribute__((always_inline)) inline std::uint32_t exchange(int key, std::uint32_t keep, unsigned rights) noexcept {
  std::uint32_t* mirror = &pkeys_thread_pkru;
  const std::uint32_t set = rights << PKEYS_PKRU_SHIFT(key);
  std::uint32_t eax, edx, copy, old;
  __asm__ volatile(
      "1: .byte 0x0f,0x01,0xee\n\t" /* RDPKRU: eax = PKRU, edx = 0 */
      "movl %%eax, %[old]\n\t"
      "andl %[keep], %%eax\n\t"
      "orl %[set], %%eax\n\t"
      "movl (%[mirror]), %[copy]\n\t"
      "andl %[keep], %[copy]\n\t"
      "orl %[set], %[copy]\n\t"
      "movl %[copy], (%[mirror])\n\t"
      "2: .byte 0x0f,0x01,0xef\n\t" /* WRPKRU */
      ".pushsection pkeys_wrpkru_sites,\"a?\",@progbits\n\t"
      ".balign 4\n\t"
      ".long 2b - .\n\t"
      ".popsection\n\t"
      ".pushsection pkeys_pkru_switches,\"a?\",@progbits\n\t"
      ".balign 4\n\t"
      ".long 1b - .\n\t"
      ".long 2b - 1b\n\t"
      ".popsection"
      : "=&a"(eax), "=&d"(edx), [copy] "=&r"(copy), [old] "=&r"(old)
      : "c"(0), [keep] "r"(keep), [set] "r"(set), [mirror] "r"(mirror)
      : "memory");
  (void)eax;
  (void)edx;
  (void)copy;
  return old & ~keep;
}

// Puts back bits `saved` (from exchange) of the key whose keep_mask is `keep`.
__attribute__((always_inline)) inline void restore(std::uint32_t keep, std::uint32_t saved) noexcept {
  pkeys_pkru_update(keep, saved);
}

}  // namespace pkeys::backend::thread_rights
