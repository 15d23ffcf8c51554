// SPDX-License-Identifier: MIT
// pkeyctl run --execute-only (execute_only.cpp).
#pragma once

#include <string>

namespace pkeyctl {

// True when ARG is --execute-only or --execute-only=VALUE.
bool is_execute_only_option(const char* arg);

// Sets the program up to run with its code execute-only (OPTION is the
// --execute-only argument, FILE the file exec would run, "" when none).
// Returns -1 in the process that is to exec PROGRAM next, with the
// environment set; otherwise pkeyctl's exit status: the program's own (learn
// mode waits for it), 1 refused (no PKU, a static program), 2 usage, 125
// pkeyctl failed.
int execute_only(const char* option, const std::string& file);

}  // namespace pkeyctl
