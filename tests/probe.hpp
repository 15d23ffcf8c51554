// SPDX-License-Identifier: MIT
// Test helpers: touch memory in a forked child and report whether the
// access faulted, and how; and helpers to map pages.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <string>

namespace pkeys_test {

enum class Access { read, write };

struct Outcome {
  bool faulted = false;
  int signo = 0;
  int code = 0;       // si_code
  int fault_key = -1;  // pkeys_fault_pkey in the child's handler
  int fault_vkey = -1;  // pkeys_vkey_fault in the child's handler
};

// Performs one access to `addr` in a forked child (which inherits the
// calling thread's rights) and reports what happened.
Outcome probe(void* addr, Access access);

inline bool can_read(void* addr) { return !probe(addr, Access::read).faulted; }
inline bool can_write(void* addr) { return !probe(addr, Access::write).faulted; }

std::string describe(const Outcome& o);

// An anonymous private mapping of `pages` pages, read-write.
void* map_pages(std::size_t pages);
std::size_t page_size();

bool hardware_backend();
bool per_thread_rights();

}  // namespace pkeys_test
