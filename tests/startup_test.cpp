// SPDX-License-Identifier: MIT
// A fresh process: choosing the backend (which probes the kernel) must not
// leave the thread, or threads it creates, a right to a free key number.
// Its own program, so that no earlier test has reset the register.
#include <gtest/gtest.h>

#include <cstdint>
#include <thread>

#include "pkeys/pkeys.h"
#include "pkeys/pkru.h"
#include "probe.hpp"

namespace {

void expect_free_keys_disabled(std::uint32_t pkru, const char* who) {
  for (int k = 1; k < pkeys_max_keys(); ++k)
    if (pkey_query(k) < 0) {
      EXPECT_EQ(pkeys_pkru_rights(pkru, k), unsigned{PKEY_DISABLE_ACCESS}) << who << ", key " << k;
    }
}

}  // namespace

TEST(Startup, FreeKeysStayAccessDisabled) {
  if (!(pkeys_capabilities() & PKEYS_CAP_HARDWARE))
    GTEST_SKIP() << "backend " << pkeys_backend() << " has no PKRU";
  expect_free_keys_disabled(pkeys_rdpkru(), "this thread");
  std::uint32_t child = 0;
  pkeys_test::ScopedThread([&] { child = pkeys_rdpkru(); }).join();
  expect_free_keys_disabled(child, "a new thread");
}
