// SPDX-License-Identifier: MIT
// A fresh process: choosing the backend (which probes the kernel) must not
// leave the thread, or threads it creates, a right to a free key number;
// signal-handler entry points behave alike before and after that choice.
// Its own program, so that no earlier test has reset the register or
// constructed the runtime.
#include <gtest/gtest.h>

#include <cerrno>
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

// First in this fresh process, so the first calls find no Runtime: the
// signal-handler entry points check their input before looking for it, and
// fail alike once it exists.
TEST(Startup, SignalEntryPointsRefuseNullBeforeAndAfterTheRuntime) {
  for (const char* when : {"before the runtime", "after the runtime"}) {
    EXPECT_ERRNO(EINVAL, pkeys_signal_enter(nullptr)) << when;
    errno = 0;
    EXPECT_EQ(pkeys_fault_pkey(nullptr), -1) << when;
    EXPECT_EQ(pkeys_vkey_fault(nullptr), -1) << when;
    EXPECT_EQ(errno, 0) << when << ": the fault queries leave errno alone";
    ASSERT_GT(pkeys_max_keys(), 0);  // constructs the runtime for the second round
  }
}

TEST(Startup, FreeKeysStayAccessDisabled) {
  if (!(pkeys_capabilities() & PKEYS_CAP_HARDWARE))
    GTEST_SKIP() << "backend " << pkeys_backend() << " has no PKRU";
  expect_free_keys_disabled(pkeys_rdpkru(), "this thread");
  std::uint32_t child = 0;
  pkeys_test::ScopedThread([&] { child = pkeys_rdpkru(); }).join();
  expect_free_keys_disabled(child, "a new thread");
}
