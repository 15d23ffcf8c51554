// SPDX-License-Identifier: MIT
// Readers for /proc/PID/maps and /proc/PID/smaps (the OS room).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace pkeys::os {

// One mapping of /proc/PID/smaps with the fields pkeys cares about.
struct Mapping {
  std::uintptr_t start = 0;
  std::uintptr_t end = 0;
  std::string perms;     // "rw-p"
  std::string name;      // path, [heap], ... or empty
  int protection_key = -1;  // ProtectionKey field; -1 where the kernel has none
};

// The mapped address ranges of this process, sorted, adjacent ones merged;
// nullopt when /proc/self/maps cannot be read (no descriptor left, /proc
// not mounted, a sandbox): a failed read proves nothing.
std::optional<std::vector<std::pair<std::uintptr_t, std::uintptr_t>>> mapped_ranges_of_self();

// Calls `f` for each mapping of process `pid` (0: this process), read from
// smaps. Returns false when the file cannot be read.
bool for_each_mapping(int pid, const std::function<void(const Mapping&)>& f);

// Whether a mapping of this process carries protection key `key`, as the
// kernel's smaps ProtectionKey field tells: 1 or 0; -ENOSYS when the kernel
// reports no keys, or smaps cannot be read (memory included).
int kernel_key_in_use(int key) noexcept;

}  // namespace pkeys::os
