// SPDX-License-Identifier: MIT
/*
 * pkru.h - the x86 PKRU register, read and written directly.
 *
 * PKRU holds two bits per key for the running thread: bit 2k denies access
 * to key k, bit 2k+1 denies writes. These are the raw instructions (about
 * 20-30 cycles, no system call); use them only where pkeys_capabilities()
 * has PKEYS_CAP_HARDWARE, since they raise #UD on a CPU without PKU.
 * pkey_set and pkeys::key::set are the checked ways to change rights.
 *
 * Example:
 *
 *   if (pkeys_capabilities() & PKEYS_CAP_HARDWARE)
 *     printf("PKRU=%08x\n", pkeys_rdpkru());
 */
#ifndef PKEYS_PKRU_H
#define PKEYS_PKRU_H

#include <stdint.h>

#if !defined(__x86_64__)
#error "pkeys/pkru.h is for x86-64"
#endif

/* Rights bits of `pkey` within a PKRU value. */
#define PKEYS_PKRU_SHIFT(pkey) (2u * (unsigned)(pkey))

static inline uint32_t pkeys_rdpkru(void) {
  uint32_t eax, edx;
  __asm__ volatile(".byte 0x0f,0x01,0xee" : "=a"(eax), "=d"(edx) : "c"(0));
  (void)edx;
  return eax;
}

/* Each WRPKRU that pkeys emits, inlined or not, is recorded in the section
 * pkeys_wrpkru_sites (one 32-bit offset from the entry to the instruction),
 * so that `pkeyctl scan` tells these sanctioned switches from gadgets. */
static inline void pkeys_wrpkru(uint32_t pkru) {
  __asm__ volatile(
      "1: .byte 0x0f,0x01,0xef\n\t"
      ".pushsection pkeys_wrpkru_sites,\"a\",@progbits\n\t"
      ".balign 4\n\t"
      ".long 1b - .\n\t"
      ".popsection"
      :
      : "a"(pkru), "c"(0), "d"(0)
      : "memory");
}

/* `pkru` with `pkey`'s two bits replaced by `rights` (PKEY_DISABLE_*). */
static inline uint32_t pkeys_pkru_with(uint32_t pkru, int pkey, unsigned rights) {
  unsigned shift = PKEYS_PKRU_SHIFT(pkey);
  return (pkru & ~(3u << shift)) | ((rights & 3u) << shift);
}

/* `pkey`'s rights (PKEY_DISABLE_*) within `pkru`. */
static inline unsigned pkeys_pkru_rights(uint32_t pkru, int pkey) {
  return (pkru >> PKEYS_PKRU_SHIFT(pkey)) & 3u;
}

#endif /* PKEYS_PKRU_H */
