// SPDX-License-Identifier: MIT
/* Uses an installed pkeys: a key, a tagged page, a rights change. */
#define _GNU_SOURCE
#include <pkeys/pkeys.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

int main(void) {
  /* The library the program runs with is the one its header describes. */
  char built[32];
  snprintf(built, sizeof built, "%d.%d.%d", PKEYS_VERSION_MAJOR, PKEYS_VERSION_MINOR, PKEYS_VERSION_PATCH);
  if (strcmp(pkeys_version(), built) != 0) {
    fprintf(stderr, "consumer: pkeys_version() is %s, the header says %s\n", pkeys_version(), built);
    return 1;
  }
  int key = pkey_alloc(0, 0);
  char *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (key <= 0 || page == MAP_FAILED || pkey_mprotect(page, 4096, PROT_READ | PROT_WRITE, key) != 0) return 1;
  page[0] = 'k';
  if (pkey_set(key, PKEY_DISABLE_WRITE) != 0 || pkey_get(key) != PKEY_DISABLE_WRITE) return 1;
  if (pkeys_free_strict(key) != -1) return 1; /* EBUSY: the page still carries it */
  munmap(page, 4096);
  if (pkey_free(key) != 0) return 1;
  printf("consumer: pkeys %s, %s backend works\n", pkeys_version(), pkeys_backend());
  return 0;
}
