// SPDX-License-Identifier: MIT
/* Uses an installed pkeys: a key, a tagged page, a rights change. */
#define _GNU_SOURCE
#include <pkeys/pkeys.h>
#include <stdio.h>
#include <sys/mman.h>

int main(void) {
  int key = pkey_alloc(0, 0);
  char *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (key <= 0 || page == MAP_FAILED || pkey_mprotect(page, 4096, PROT_READ | PROT_WRITE, key) != 0) return 1;
  page[0] = 'k';
  if (pkey_set(key, PKEY_DISABLE_WRITE) != 0 || pkey_get(key) != PKEY_DISABLE_WRITE) return 1;
  if (pkey_free(key) != -1) return 1; /* EBUSY: the page still carries it */
  munmap(page, 4096);
  if (pkey_free(key) != 0) return 1;
  printf("consumer: pkeys %s backend works\n", pkeys_backend());
  return 0;
}
