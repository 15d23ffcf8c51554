// SPDX-License-Identifier: MIT
/* A secret key kept in memory that only the code which needs it can read.
 *
 * The key material lives in a page tagged with a protection key whose
 * rights deny all access; sign() opens it for the few instructions that
 * use it. A stray read anywhere else (a buffer over-read, a debugging
 * dump) faults, and pkeys_diagnose_faults names the key in the report. */
#define _GNU_SOURCE
#include <pkeys/pkeys.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

static int secret_key = -1;
static unsigned char *secret;

/* A toy "signature": XOR of the message with the secret. */
static unsigned sign(const char *message) {
  unsigned sig = 0;
  pkey_set(secret_key, 0); /* open: this thread only, on PKU hardware */
  for (size_t i = 0; message[i]; ++i) sig = sig * 31 + (unsigned char)(message[i] ^ secret[i % 32]);
  pkey_set(secret_key, PKEY_DISABLE_ACCESS); /* closed again */
  return sig;
}

int main(void) {
  pkeys_diagnose_faults(1); /* a fault on the key prints a report */
  secret_key = pkey_alloc(0, PKEY_DISABLE_ACCESS);
  secret = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (secret_key < 0 || secret == MAP_FAILED || pkey_mprotect(secret, 4096, PROT_READ | PROT_WRITE, secret_key) != 0) {
    perror("secret_key");
    return 1;
  }
  pkey_label(secret_key, "signing key");
  pkey_set(secret_key, 0);
  memcpy(secret, "0123456789abcdef0123456789abcdef", 32); /* load the key */
  pkey_set(secret_key, PKEY_DISABLE_ACCESS);

  printf("signature of \"hello\": %08x (backend %s)\n", sign("hello"), pkeys_backend());

  /* Done: wipe, unmap, free. pkey_free refuses while pages carry the key. */
  pkey_set(secret_key, 0);
  memset(secret, 0, 4096);
  munmap(secret, 4096);
  return pkey_free(secret_key) == 0 ? 0 : 1;
}
