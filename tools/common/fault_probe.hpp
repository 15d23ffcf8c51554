// SPDX-License-Identifier: MIT
// Does touching this address fault, and how: one access made in a forked
// child, which inherits the calling thread's rights, reported back over a
// pipe. Shared by the tests (tests/probe.hpp) and `pkeyctl demo`; public
// API and libc only, as the tools are.
#pragma once

namespace pkeys_probe {

enum class Access { read, write };

struct Outcome {
  bool faulted = false;
  int signo = 0;        // SIGSEGV or SIGBUS; -1 when the child died unreported
  int code = 0;         // si_code
  int fault_key = -1;   // pkeys_fault_pkey in the child's handler
  int fault_vkey = -1;  // pkeys_vkey_fault in the child's handler
  unsigned char value = 0;  // the byte read, when a read did not fault
};

// Performs one access to `addr` (a read of its byte, or a write of 1) in a
// forked child and reports what happened. Aborts where no child can be had.
Outcome probe(void* addr, Access access);

}  // namespace pkeys_probe
