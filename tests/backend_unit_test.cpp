// SPDX-License-Identifier: MIT
// The emulated backend alone, against a fake of the core: nothing of the
// core is linked, so this checks the seam as much as the backend. The fake
// stands in for the address space's enforcement of rights with page
// protections (backend::PageProtections).
#include <gtest/gtest.h>

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <utility>
#include <vector>

#include "backend/backend_concept.hpp"
#include "backend/emulated.hpp"
#include "os/proc_maps.hpp"
#include "pkeys/pkeys.h"

namespace {

using pkeys::backend::EmulatedBackend;

static_assert(pkeys::backend::KeyHardware<EmulatedBackend>);
static_assert(EmulatedBackend::kFeatures == 0, "the emulation claims no hardware feature");

// The concept holds a backend to its features. FakeKeys has the key
// operations and nothing optional.
class FakeKeys : public pkeys::backend::Backend {
 public:
  static constexpr const char* kName = "fake";
  static constexpr int kMaxKeys = 16;
  const char* name() const noexcept override { return kName; }
  unsigned capabilities() const noexcept override { return 0; }
  int max_keys() const noexcept override { return kMaxKeys; }
  int acquire_key(unsigned) noexcept override { return -ENOSPC; }
  int release_key(int) noexcept override { return 0; }
  int protect(std::uintptr_t, std::size_t, int, int) noexcept override { return 0; }
  int set_rights(int, unsigned) noexcept override { return 0; }
  unsigned get_rights(int) const noexcept override { return 0; }
  int set_rights_in(pid_t, int, unsigned, std::vector<pid_t>*, KeyCheck) noexcept override { return 0; }
};
// Without hardware, rights are page protections: it must accept a host.
struct NoHost final : FakeKeys {
  static constexpr unsigned kFeatures = 0;
};
struct WithHost final : FakeKeys {
  static constexpr unsigned kFeatures = 0;
  void attach(pkeys::backend::PageProtections&) noexcept override {}
};
// Claiming si_pkey obliges it to read it.
struct ClaimsFaultPkey final : FakeKeys {
  static constexpr unsigned kFeatures = pkeys::backend::kHardware | pkeys::backend::kFaultPkey;
};
// Per-thread rights must be saved, restored and adopted.
struct ClaimsPerThreadRights final : FakeKeys {
  static constexpr unsigned kFeatures = pkeys::backend::kHardware | pkeys::backend::kPerThreadRights;
};
static_assert(!pkeys::backend::KeyHardware<NoHost>);
static_assert(pkeys::backend::KeyHardware<WithHost>);
static_assert(!pkeys::backend::KeyHardware<ClaimsFaultPkey>);
static_assert(!pkeys::backend::KeyHardware<ClaimsPerThreadRights>);

// Records what the backend asks of the core; fails on demand.
class FakePages final : public pkeys::backend::PageProtections {
 public:
  int enforce(int key, unsigned rights, int) noexcept override {
    calls.emplace_back(key, rights);
    if (fail_next != 0) return std::exchange(fail_next, 0);
    return 0;
  }
  std::vector<std::pair<int, unsigned>> calls;
  int fail_next = 0;
};

// The permissions /proc/self/maps shows for the page at `p` ("rw-p"...).
std::string perms_of(const void* p) {
  std::string perms;
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  pkeys::os::for_each_mapping(0, [&](const pkeys::os::Mapping& m) {
    if (m.start <= a && a < m.end) perms = m.perms;
  });
  return perms;
}

class EmulatedBackendTest : public ::testing::Test {
 protected:
  void SetUp() override { backend.attach(pages); }
  FakePages pages;
  EmulatedBackend backend;
};

TEST_F(EmulatedBackendTest, HandsOutTheLowestFreeKeyUntilNoneIsLeft) {
  std::vector<int> keys;
  for (int i = 1; i < EmulatedBackend::kMaxKeys; ++i) keys.push_back(backend.acquire_key(0));
  for (int i = 1; i < EmulatedBackend::kMaxKeys; ++i) EXPECT_EQ(keys[static_cast<std::size_t>(i - 1)], i);
  EXPECT_EQ(backend.acquire_key(0), -ENOSPC);
  EXPECT_EQ(backend.release_key(3), 0);
  EXPECT_EQ(backend.acquire_key(PKEY_DISABLE_WRITE), 3);
  EXPECT_EQ(backend.get_rights(3), static_cast<unsigned>(PKEY_DISABLE_WRITE)) << "a new key starts with the asked rights";
  EXPECT_TRUE(pages.calls.empty()) << "acquiring touches no page";
}

TEST_F(EmulatedBackendTest, RightsChangesAreEnforcedThroughTheCore) {
  const int k = backend.acquire_key(0);
  ASSERT_GT(k, 0);
  EXPECT_EQ(backend.set_rights(k, PKEY_DISABLE_ACCESS), 0);
  EXPECT_EQ(backend.get_rights(k), static_cast<unsigned>(PKEY_DISABLE_ACCESS));
  ASSERT_EQ(pages.calls.size(), 1u);
  EXPECT_EQ(pages.calls[0], std::make_pair(k, static_cast<unsigned>(PKEY_DISABLE_ACCESS)));
  EXPECT_EQ(backend.set_rights(k, PKEY_DISABLE_ACCESS), 0);
  EXPECT_EQ(pages.calls.size(), 1u) << "unchanged rights need no page change";
  // Process-wide: "every thread" is one set.
  EXPECT_EQ(backend.set_rights_in(pkeys::backend::kAllThreads, k, 0, nullptr, nullptr), 0);
  EXPECT_EQ(backend.get_rights(k), 0u);
  EXPECT_EQ(backend.get_rights(0), 0u) << "key 0 is always open";
}

TEST_F(EmulatedBackendTest, AFailedEnforcementIsUndoneAndReported) {
  const int k = backend.acquire_key(0);
  ASSERT_GT(k, 0);
  pages.fail_next = -EPERM;
  EXPECT_EQ(backend.set_rights(k, PKEY_DISABLE_WRITE), -EPERM);
  EXPECT_EQ(backend.get_rights(k), 0u) << "rights unchanged on failure";
  ASSERT_EQ(pages.calls.size(), 2u);
  EXPECT_EQ(pages.calls[1], std::make_pair(k, 0u)) << "the core is asked to restore the old rights";
}

TEST_F(EmulatedBackendTest, ProtectAppliesTheKeysRightsToThePages) {
  const long page = ::sysconf(_SC_PAGESIZE);
  void* p = ::mmap(nullptr, static_cast<std::size_t>(page), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  const int k = backend.acquire_key(PKEY_DISABLE_WRITE);
  ASSERT_GT(k, 0);
  EXPECT_EQ(backend.protect(a, static_cast<std::size_t>(page), PROT_READ | PROT_WRITE, k), 0);
  EXPECT_EQ(perms_of(p), "r--p") << "DISABLE_WRITE removes PROT_WRITE";
  ASSERT_EQ(backend.set_rights(k, PKEY_DISABLE_ACCESS), 0);
  EXPECT_EQ(perms_of(p), "r--p") << "pages are the core's to change, not the backend's";
  EXPECT_EQ(backend.protect(a, static_cast<std::size_t>(page), PROT_READ | PROT_WRITE, k), 0);
  EXPECT_EQ(perms_of(p), "---p") << "DISABLE_ACCESS removes everything";
  EXPECT_EQ(backend.protect(a, static_cast<std::size_t>(page), PROT_READ | PROT_WRITE, 0), 0);
  EXPECT_EQ(perms_of(p), "rw-p") << "key 0 is a plain mprotect";
  ::munmap(p, static_cast<std::size_t>(page));
}

TEST_F(EmulatedBackendTest, NamesNoFaultKeyAndRejectsStrangeThreads) {
  siginfo_t si{};
  si.si_signo = SIGSEGV;
  si.si_code = SEGV_ACCERR;
  EXPECT_EQ(backend.fault_key(si), -1) << "the core's records attribute emulated faults";
  const int k = backend.acquire_key(0);
  EXPECT_EQ(backend.set_rights_in(-5, k, 0, nullptr, nullptr), -ESRCH);
  EXPECT_EQ(backend.set_rights_in(0x3fffffff, k, 0, nullptr, nullptr), -ESRCH);
  EXPECT_EQ(backend.set_rights_in(static_cast<pid_t>(::gettid()), k, PKEY_DISABLE_WRITE, nullptr, nullptr), 0);
  EXPECT_EQ(backend.get_rights(k), static_cast<unsigned>(PKEY_DISABLE_WRITE));
  EXPECT_EQ(backend.save_thread_rights(), 0u) << "process-wide rights: nothing per thread to save";
}

}  // namespace
