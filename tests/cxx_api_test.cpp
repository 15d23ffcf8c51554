// SPDX-License-Identifier: MIT
// The C++ API: owning keys, checked rights, scoped rights, regions.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>
#include <type_traits>

#include "pkeys/pkeys.hpp"
#include "probe.hpp"

using namespace pkeys_test;

static_assert(!std::is_copy_constructible_v<pkeys::key>);
static_assert(std::is_nothrow_move_constructible_v<pkeys::key>);
static_assert(!std::is_copy_constructible_v<pkeys::region>);

TEST(CxxRights, HoldOnlyValidBits) {
  EXPECT_EQ(pkeys::rights::from_bits(0), pkeys::rights::read_write());
  EXPECT_EQ(pkeys::rights::from_bits(PKEY_DISABLE_WRITE), pkeys::rights::read_only());
  EXPECT_EQ(pkeys::rights::from_bits(PKEY_DISABLE_ACCESS), pkeys::rights::no_access());
  EXPECT_FALSE(pkeys::rights::from_bits(4).has_value());
  EXPECT_TRUE(pkeys::rights::read_only().can_read());
  EXPECT_FALSE(pkeys::rights::read_only().can_write());
  EXPECT_FALSE(pkeys::rights::no_access().can_read());
}

TEST(CxxKey, AllocatesMovesAndFreesInDestructor) {
  int id = -1;
  {
    auto k = pkeys::key::allocate(pkeys::rights::read_only());
    ASSERT_TRUE(k.has_value()) << k.error().message();
    id = k->id();
    EXPECT_GT(id, 0);
    EXPECT_EQ(k->get(), pkeys::rights::read_only());
    pkeys::key moved = std::move(*k);
    EXPECT_EQ(k->id(), -1);
    EXPECT_EQ(moved.id(), id);
    EXPECT_EQ(pkey_query(id), PKEY_DISABLE_WRITE);
  }
  EXPECT_EQ(pkey_query(id), -1) << "destructor freed the key";
}

// Every key the process can still get, access-disabled: whatever a bad
// switch touches belongs to one of them.
std::vector<pkeys::key> all_other_keys() {
  std::vector<pkeys::key> keys;
  while (auto k = pkeys::key::allocate(pkeys::rights::no_access())) keys.push_back(std::move(*k));
  return keys;
}

void expect_all_no_access(const std::vector<pkeys::key>& keys) {
  for (const auto& k : keys) EXPECT_EQ(pkey_get(k.id()), PKEY_DISABLE_ACCESS) << "key " << k.id();
}

TEST(CxxKey, SetOnAReleasedOrMovedFromKeyFailsAndTouchesNoOtherKey) {
  auto released = pkeys::key::allocate(pkeys::rights::no_access());
  auto source = pkeys::key::allocate(pkeys::rights::no_access());
  ASSERT_TRUE(released && source);
  ASSERT_FALSE(released->release());
  pkeys::key target = std::move(*source);
  const auto others = all_other_keys();  // the freed number among them
  for (const pkeys::key* k : {&*released, &*source}) {
    EXPECT_EQ(k->set(pkeys::rights::read_write()), std::errc::invalid_argument);
    EXPECT_EQ(k->get(), pkeys::rights::no_access());
  }
  expect_all_no_access(others);
  EXPECT_EQ(pkey_get(target.id()), PKEY_DISABLE_ACCESS);
}

TEST(CxxScopedRights, NeverRestoresOntoAKeyReleasedOrReplacedInTheScope) {
  auto held = pkeys::key::allocate(pkeys::rights::read_only());
  auto replacement = pkeys::key::allocate(pkeys::rights::read_write());
  ASSERT_TRUE(held && replacement);
  const int replacement_id = replacement->id();
  {
    pkeys::scoped_rights closed(*held, pkeys::rights::no_access());
    ASSERT_FALSE(closed.error());
    *held = std::move(*replacement);  // frees the scope's key
  }
  EXPECT_EQ(held->id(), replacement_id);
  EXPECT_EQ(held->get(), pkeys::rights::read_write()) << "the scope's rights went onto another key";

  auto released = pkeys::key::allocate(pkeys::rights::read_only());
  ASSERT_TRUE(released);
  const int number = released->id();
  std::vector<pkeys::key> others;
  {
    pkeys::scoped_rights open(*released, pkeys::rights::read_write());
    ASSERT_FALSE(open.error());
    ASSERT_FALSE(released->release());
    others = all_other_keys();  // the freed number among them, access-disabled
  }
  EXPECT_EQ(pkey_get(number), PKEY_DISABLE_ACCESS) << "rights written back onto a freed number";
  expect_all_no_access(others);
}

TEST(CxxKey, ExhaustionIsAnErrorCode) {
  std::vector<pkeys::key> keys;
  for (;;) {
    auto k = pkeys::key::allocate();
    if (!k) {
      EXPECT_EQ(k.error(), std::errc::no_space_on_device);
      break;
    }
    keys.push_back(std::move(*k));
    ASSERT_LT(keys.size(), 64u);
  }
  EXPECT_FALSE(keys.empty());
}

TEST(CxxScopedRights, RestoreOnExitAndNest) {
  auto k = pkeys::key::allocate(pkeys::rights::no_access());
  ASSERT_TRUE(k);
  auto r = pkeys::region::map(page_size(), PROT_READ | PROT_WRITE, *k);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_FALSE(can_read(r->data()));
  {
    pkeys::scoped_rights open(*k, pkeys::rights::read_write());
    ASSERT_FALSE(open.error());
    std::memcpy(r->data(), "secret", 7);
    EXPECT_TRUE(can_write(r->data()));
    {
      pkeys::scoped_rights look(*k, pkeys::rights::read_only());
      EXPECT_TRUE(can_read(r->data()));
      EXPECT_FALSE(can_write(r->data()));
    }
    EXPECT_EQ(k->get(), pkeys::rights::read_write()) << "inner scope restored";
    EXPECT_TRUE(can_write(r->data()));
  }
  EXPECT_EQ(k->get(), pkeys::rights::no_access());
  const Outcome o = probe(r->data(), Access::read);
  EXPECT_TRUE(o.faulted);
  EXPECT_EQ(o.fault_key, k->id());
}

// The default free: the key is gone at once, its region stays locked and
// keeps the number from the next pkey_alloc until it is unmapped.
TEST(CxxRegion, KeyReleasedWhileARegionLivesQuarantinesTheNumber) {
  auto k = pkeys::key::allocate();
  ASSERT_TRUE(k);
  const int id = k->id();
  auto r = pkeys::region::map(page_size(), PROT_READ | PROT_WRITE, *k);
  ASSERT_TRUE(r);
  EXPECT_FALSE(k->release());
  EXPECT_EQ(k->id(), -1);
  EXPECT_EQ(pkey_query(id), -1);
  int held = -1;
  ASSERT_EQ(pkeys_get_quarantined(&held, 1), 1);
  EXPECT_EQ(held, id);
  EXPECT_FALSE(can_read(r->data()));
  r = std::unexpected(std::error_code());  // unmaps the region
  EXPECT_EQ(pkeys_get_quarantined(nullptr, 0), 0);
}

TEST(CxxRegion, KeyIsBusyWhileARegionLives) {
  auto k = pkeys::key::allocate();
  ASSERT_TRUE(k);
  const int id = k->id();
  {
    auto r = pkeys::region::map(3 * page_size(), PROT_READ | PROT_WRITE, *k);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->size(), 3 * page_size());
    EXPECT_EQ(k->release_strict(), std::errc::device_or_resource_busy);
    EXPECT_EQ(k->id(), id) << "a busy key stays owned";
  }
  EXPECT_FALSE(k->release());
  EXPECT_EQ(k->id(), -1);
  EXPECT_EQ(pkey_query(id), -1);
}

TEST(CxxRegion, MapFailureIsReported) {
  auto k = pkeys::key::allocate();
  ASSERT_TRUE(k);
  auto r = pkeys::region::map(page_size(), 0x40000000, *k);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), std::errc::invalid_argument);
}
