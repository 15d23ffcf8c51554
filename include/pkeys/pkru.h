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
      ".pushsection pkeys_wrpkru_sites,\"a?\",@progbits\n\t"
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

/* --- switches that a cross-thread change cannot lose ----------------------
 *
 * pkey_set_all and its kin change another thread's rights by editing the
 * PKRU saved in that thread's signal frame. A thread interrupted between
 * its own RDPKRU and WRPKRU would write the old bits back. So each
 * read-modify-write of PKRU that pkeys emits, inline ones included, is one
 * asm block recorded in the section pkeys_pkru_switches (its start and the
 * WRPKRU's offset); the handler moves a thread interrupted inside one back
 * to its start, where it reads the edited value again (the idea of the
 * kernel's restartable sequences). Each module (program, shared library)
 * registers its section with libpkeys from a constructor below.
 *
 * pkeys_thread_pkru is the value the calling thread's last such switch
 * wrote: pkeys compares it with a cross-thread change and does not signal
 * a thread whose rights already match. A raw pkeys_wrpkru does not update
 * it (see "cross-thread changes" in the README). */
#ifdef __cplusplus
extern "C" {
#endif
extern __thread uint32_t pkeys_thread_pkru __attribute__((tls_model("initial-exec")));
/* Registration of a module's pkeys_pkru_switches section (by its bounds;
 * counted, so every translation unit may register the same module). */
__attribute__((visibility("default"))) void pkeys_pkru_register_switches(const void *begin,
                                                                         const void *end);
__attribute__((visibility("default"))) void pkeys_pkru_unregister_switches(const void *begin);
#ifdef __cplusplus
}
#endif

/* PKRU := (PKRU & keep) | set, restartable, and the same change made to
 * the thread's copy (only the bits it sets: inside a signal handler the rest
 * of PKRU is the handler's, not the thread's). The copy is changed in place,
 * two read-modify-writes through %fs: at its offset (read just before the
 * block); a handler that interrupts the block restarts it, which makes a
 * half-changed copy whole again. Always inlined: it is the hot path, and
 * its records belong to the function it lands in (the "?" in the section
 * flags puts them in that function's COMDAT group, so that a discarded
 * duplicate takes its records along). SAVE runs right after the RDPKRU;
 * SET ORs %[set] into eax and the copy, or is empty when nothing is set. */
/* The records of a switch whose restart point is label 1 and whose WRPKRU
 * is label 2: its WRPKRU site (pkeyctl scan) and its restart record. Every
 * restartable switch ends its first part with these. */
#define PKEYS_PKRU_SWITCH_RECORDS_ASM_                                      \
  ".pushsection pkeys_wrpkru_sites,\"a?\",@progbits\n\t"                    \
  ".balign 4\n\t"                                                           \
  ".long 2b - .\n\t"                                                        \
  ".popsection\n\t"                                                         \
  ".pushsection pkeys_pkru_switches,\"a?\",@progbits\n\t"                   \
  ".balign 4\n\t"                                                           \
  ".long 1b - .\n\t"                                                        \
  ".long 2b - 1b\n\t"                                                       \
  ".popsection"

#define PKEYS_PKRU_SWITCH_ASM_(SAVE, SET)                                    \
  "1: .byte 0x0f,0x01,0xee\n\t" /* RDPKRU: eax = PKRU, edx = 0 */          \
  SAVE                                                                      \
  "andl %[keep], %%eax\n\t"                                                 \
  "andl %[keep], %%fs:(%[copy])\n\t"                                        \
  SET                                                                       \
  "2: .byte 0x0f,0x01,0xef\n\t" /* WRPKRU */                               \
  PKEYS_PKRU_SWITCH_RECORDS_ASM_
#define PKEYS_PKRU_SET_ASM_ "orl %[set], %%eax\n\torl %[set], %%fs:(%[copy])\n\t"

/* pkeys_thread_pkru's offset from the thread pointer (a constant). */
__attribute__((always_inline)) static inline uint64_t pkeys_thread_pkru_offset_(void) {
  uint64_t offset;
  __asm__("movq pkeys_thread_pkru@gottpoff(%%rip), %0" : "=r"(offset));
  return offset;
}

__attribute__((always_inline)) static inline void pkeys_pkru_update(uint32_t keep, uint32_t set) {
  uint32_t eax, edx;
  if (__builtin_constant_p(set) && set == 0) {  /* read-write: nothing to OR in */
    __asm__ volatile(PKEYS_PKRU_SWITCH_ASM_("", "")
                     : "=&a"(eax), "=&d"(edx)
                     : "c"(0), [keep] "r"(keep), [copy] "r"(pkeys_thread_pkru_offset_())
                     : "memory");
  } else {
    __asm__ volatile(PKEYS_PKRU_SWITCH_ASM_("", PKEYS_PKRU_SET_ASM_)
                     : "=&a"(eax), "=&d"(edx)
                     : "c"(0), [keep] "r"(keep), [set] "r"(set), [copy] "r"(pkeys_thread_pkru_offset_())
                     : "memory");
  }
  (void)eax;
  (void)edx;
}

/* The same, returning PKRU as it was before the switch (one move more). */
__attribute__((always_inline)) static inline uint32_t pkeys_pkru_exchange(uint32_t keep, uint32_t set) {
  uint32_t eax, edx, old;
  if (__builtin_constant_p(set) && set == 0) {
    __asm__ volatile(PKEYS_PKRU_SWITCH_ASM_("movl %%eax, %[old]\n\t", "")
                     : "=&a"(eax), "=&d"(edx), [old] "=&r"(old)
                     : "c"(0), [keep] "r"(keep), [copy] "r"(pkeys_thread_pkru_offset_())
                     : "memory");
  } else {
    __asm__ volatile(PKEYS_PKRU_SWITCH_ASM_("movl %%eax, %[old]\n\t", PKEYS_PKRU_SET_ASM_)
                     : "=&a"(eax), "=&d"(edx), [old] "=&r"(old)
                     : "c"(0), [keep] "r"(keep), [set] "r"(set), [copy] "r"(pkeys_thread_pkru_offset_())
                     : "memory");
  }
  (void)eax;
  (void)edx;
  return old;
}

/* The rights of `pkey` := `rights` (PKEY_DISABLE_*), restartable. */
__attribute__((always_inline)) static inline void pkeys_pkru_set_rights(int pkey, unsigned rights) {
  unsigned shift = PKEYS_PKRU_SHIFT(pkey);
  pkeys_pkru_update(~(3u << shift), (rights & 3u) << shift);
}

extern const char __start_pkeys_pkru_switches[] __attribute__((weak, visibility("hidden")));
extern const char __stop_pkeys_pkru_switches[] __attribute__((weak, visibility("hidden")));

__attribute__((constructor, used)) static void pkeys_pkru_register_module_(void) {
  if (__start_pkeys_pkru_switches)
    pkeys_pkru_register_switches(__start_pkeys_pkru_switches, __stop_pkeys_pkru_switches);
}
__attribute__((destructor, used)) static void pkeys_pkru_unregister_module_(void) {
  if (__start_pkeys_pkru_switches) pkeys_pkru_unregister_switches(__start_pkeys_pkru_switches);
}

#endif /* PKEYS_PKRU_H */
