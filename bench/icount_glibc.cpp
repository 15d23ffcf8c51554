// SPDX-License-Identifier: MIT
// pkeys_icount_glibc: instructions per call of glibc's own pkey_set and
// pkey_get, the floor libpkeys' C ABI is compared with. Linked statically
// against glibc alone (no libpkeys), and, as pkeys_icount_glibc_plt, with
// libc.so (the calls then go through the PLT, as libpkeys.so's do), and
// run in the same guest boot as
// pkeys_icount_bench (scripts/pku-lane.sh --icount; method and output in
// icount_measure.hpp). Without PKU (pkey_alloc fails) it says so and
// exits 77.
#include <sys/mman.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "icount_measure.hpp"

#ifdef PKEYS_ICOUNT_PLT
#define ROW(name) "glibc.so:" name
#else
#define ROW(name) "glibc:" name
#endif

int main() {
  const int key = pkey_alloc(0, 0);
  if (key < 0) {
    std::printf("pkeys_icount_glibc: needs x86 PKU (glibc's pkey_alloc: %s); nothing measured\n",
                std::strerror(errno));
    return 77;
  }
  icount::print_clock_pair(ROW("clock_pair"));
  // A call sets the key's rights and sets them back: two operations.
  icount::row(ROW("pkey_set"),
              [key] { return pkey_set(key, PKEY_DISABLE_ACCESS) | pkey_set(key, 0); },
              {.per_call = 2});
  icount::row(ROW("pkey_get"), [key] { return pkey_get(key) < 0 ? -1 : 0; });
  return 0;
}
