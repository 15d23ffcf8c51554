// SPDX-License-Identifier: MIT
// Compiled (not run) by the header.* tests: the three headers together
// under -std=c++23 -pedantic -Werror; under C++20 pkeys.hpp must stop with
// a message that names C++23.
#include <pkeys/pkeys.hpp>
#include <pkeys/pkeys.h>
#include <pkeys/pkru.h>

int main() {
  auto key = pkeys::key::allocate(pkeys::rights::no_access());
  static pkeys_sigjmp_buf env;
  if (pkeys_sigsetjmp(env, 1) != 0) return pkeys_fault_pkey(nullptr);
  return key ? 0 : static_cast<int>(pkeys_pkru_rights(pkeys_rdpkru(), 1));
}
