// SPDX-License-Identifier: MIT
// PKEYS_BACKEND: each test binary run sets it (see tests/CMakeLists.txt)
// and passes the expected outcome in PKEYS_EXPECT.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <string>

#include "pkeys/pkeys.h"
#include "probe.hpp"

namespace {

// What /proc/cpuinfo says, independently of pkeys' CPUID reading.
bool cpu_has_pku() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("flags", 0) == 0)
      return line.find(" pku") != std::string::npos && line.find(" ospke") != std::string::npos;
  return false;
}

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

}  // namespace

TEST(BackendSelection, FollowsPkeysBackend) {
  const std::string wanted = env("PKEYS_BACKEND");
  const std::string got = pkeys_backend();
  const std::string reason = pkeys_backend_reason();
  if (wanted == "emulated") {
    EXPECT_EQ(got, "emulated") << reason;
  } else if (wanted == "x86-pku") {
    EXPECT_EQ(got, cpu_has_pku() ? "x86-pku" : "none") << reason;
  } else if (wanted == "auto" || wanted.empty()) {
    EXPECT_EQ(got, cpu_has_pku() ? "x86-pku" : "emulated") << reason;
  } else {
    EXPECT_EQ(got, "none") << reason;
    EXPECT_NE(reason.find("not a backend"), std::string::npos) << reason;
  }
  if (got == "none") {
    EXPECT_ERRNO(ENOSPC, pkey_alloc(0, 0));
    EXPECT_EQ(pkeys_max_keys(), 0);
    EXPECT_EQ(pkeys_capabilities(), 0u);
    // Every call fails cleanly without a backend.
    for (int r : {pkey_set(0, 0), pkey_get(0), pkey_set_all(0, 0), pkey_set_thread(1, 0, 0)}) EXPECT_EQ(r, -1);
    EXPECT_ERRNO(ENOSPC, pkeys_vkey_create(0));
    EXPECT_EQ(pkeys_mmap_execute_only(nullptr, 4096), MAP_FAILED);
    if (wanted == "x86-pku") {
      EXPECT_NE(reason.find("but"), std::string::npos) << reason;
    }
  } else {
    const int k = pkey_alloc(0, 0);
    EXPECT_GT(k, 0);
    EXPECT_EQ(pkey_free(k), 0);
  }
  std::printf("PKEYS_BACKEND=%s -> %s (%s)\n", wanted.c_str(), got.c_str(), reason.c_str());
}
