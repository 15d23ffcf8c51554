// SPDX-License-Identifier: MIT
// Tags two pages with a labelled key, prints "KEY ADDRESS", and sleeps 30 s
// so that pkeyctl maps can look at it.
#include <unistd.h>

#include <cstdio>

#include "pkeys/pkeys.hpp"

int main() {
  auto key = pkeys::key::allocate();
  if (!key) return 1;
  pkey_label(key->id(), "tagged sleeper");
  auto page = pkeys::region::map(8192, PROT_READ | PROT_WRITE, *key);
  if (!page) return 1;
  std::printf("%d %p\n", key->id(), page->data());
  std::fflush(stdout);
  sleep(30);
  return 0;
}
