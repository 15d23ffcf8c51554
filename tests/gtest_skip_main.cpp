// SPDX-License-Identifier: MIT
// The tests' main: gtest_main's, except that a run in which every test that
// ran was skipped exits 77, which ctest (SKIP_RETURN_CODE 77) and the PKU
// lane report as skipped: a binary whose tests all skip on this machine
// (no PKU, no per-thread rights) must not read as a pass. Output is line
// buffered even into a pipe (the PKU lane's console), so that a program
// killed for hanging still shows the test it hung in.
#include <gtest/gtest.h>

#include <cstdio>

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  ::testing::InitGoogleTest(&argc, argv);
  const int rc = RUN_ALL_TESTS();
  const ::testing::UnitTest& u = *::testing::UnitTest::GetInstance();
  // --gtest_list_tests and an empty filter run nothing: that is no skip.
  if (rc == 0 && u.test_to_run_count() > 0 && u.failed_test_count() == 0 &&
      u.successful_test_count() == 0 && u.skipped_test_count() > 0)
    return 77;
  return rc;
}
