// SPDX-License-Identifier: MIT
/* Compiled (not run) by the header.* tests under -std=c99/c11/c17 -pedantic
 * -Werror: <pkeys/pkeys.h> and <pkeys/pkru.h> alone must be clean strict C.
 * With -DEXPECT_POSIX_SIGNALS and a POSIX feature macro the signal API must
 * be declared too; with _GNU_SOURCE, glibc's own pkey_* prototypes in
 * <sys/mman.h> (seen first) must agree with pkeys.h's. */
#ifdef _GNU_SOURCE
#include <sys/mman.h>
#endif
#include <pkeys/pkeys.h>
#include <pkeys/pkru.h>

#if defined(EXPECT_POSIX_SIGNALS) && !PKEYS_HAVE_POSIX_SIGNALS
#error "POSIX is enabled, but pkeys.h left out its signal functions"
#endif

#if !defined(PKEYS_VERSION_MAJOR) || !defined(PKEYS_VERSION_MINOR) || !defined(PKEYS_VERSION_PATCH)
#error "PKEYS_VERSION_* missing"
#endif

int main(void) {
  int key = pkey_alloc(0, PKEY_DISABLE_ACCESS);
  struct pkeys_vkey_stats stats;
  unsigned rights = pkeys_pkru_rights(pkeys_pkru_with(0, key, PKEY_DISABLE_WRITE), key);
#if PKEYS_HAVE_POSIX_SIGNALS
  static pkeys_sigjmp_buf env;
  int (*fault)(const siginfo_t *) = pkeys_fault_pkey;
  int (*vkey_fault)(const siginfo_t *) = pkeys_vkey_fault;
  if (pkeys_sigsetjmp(env, 1) != 0) return fault != vkey_fault;
#endif
  return pkeys_vkey_get_stats(&stats) + (int)rights + (pkeys_version()[0] == '\0');
}
