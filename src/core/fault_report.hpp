// SPDX-License-Identifier: MIT
// The report pkeys_diagnose_faults writes for a fault caused by a key.
// Formatting is async-signal-safe: no allocation, no stdio.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pkeys::core {

struct FaultReport {
  std::uintptr_t address = 0;
  int access = -1;  // 0 read, 1 write, 2 execute, -1 unknown
  int key = -1;
  unsigned rights = 0;  // the rights that denied the access
  bool have_range = false;
  std::uintptr_t range_start = 0, range_end = 0;
  int range_prot = 0;  // what the program asked for
  char label[64] = {};
  const char* backend = "";
};

// Writes `r` to `fd`, one field a line.
void write_fault_report(int fd, const FaultReport& r) noexcept;

}  // namespace pkeys::core
