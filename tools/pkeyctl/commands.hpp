// SPDX-License-Identifier: MIT
// pkeyctl's subcommands. Each returns the process exit status.
#pragma once

namespace pkeyctl {

int info(int argc, char** argv);
int demo(int argc, char** argv);
int scan(int argc, char** argv);
int run(int argc, char** argv);
int maps(int argc, char** argv);
int bench(int argc, char** argv);

// PKEYS_WX's value when the library does not recognise it (the library then
// denies writable-and-executable protections: fail closed), else nullptr.
const char* unrecognised_pkeys_wx();

}  // namespace pkeyctl
