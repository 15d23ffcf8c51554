// SPDX-License-Identifier: MIT
// Uses an installed pkeys from C++: an owning key and a tagged region.
#include <pkeys/pkeys.hpp>

#include <cstdio>

int main() {
  auto key = pkeys::key::allocate(pkeys::rights::read_write());
  if (!key) return 1;
  auto page = pkeys::region::map(4096, PROT_READ | PROT_WRITE, *key);
  if (!page) return 1;
  static_cast<char*>(page->data())[0] = 'k';
  std::printf("consumer_cxx: pkeys %s, __cplusplus %ld\n", pkeys_version(), __cplusplus);
  return 0;
}
