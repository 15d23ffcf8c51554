// SPDX-License-Identifier: MIT
// pkeyctl: inspect and demonstrate memory protection keys.
//
// Exit status: 0 success, 1 the operation failed, 2 usage error; scan and
// run have their own (see usage()).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "commands.hpp"

namespace {

struct Command {
  const char* name;
  int (*run)(int, char**);
  const char* summary;
  bool needs_valid_pkeys_wx;  // what it does or measures depends on PKEYS_WX
};

constexpr Command kCommands[] = {
    {"info", pkeyctl::info, "CPU and kernel support, the backend and why, keys and rights", false},
    {"demo", pkeyctl::demo, "keep a secret in a key-protected page and show the key at work", true},
    {"maps", pkeyctl::maps, "a process's mappings grouped by protection key (--json for scripts)", false},
    {"bench", pkeyctl::bench, "run pkeys_bench and write a report (plots with gnuplot)", true},
    {"scan", pkeyctl::scan, "find WRPKRU/XRSTOR gadgets in a process or an ELF file", false},
    {"run", pkeyctl::run, "run a program with W^X enforced (--deny-wx) or reported (--log-wx)", true},
};

void usage(std::FILE* out) {
  std::fprintf(out,
               "usage: pkeyctl [--help] [--version] COMMAND [ARGS]\n\n"
               "Memory protection keys as a managed, safe process resource.\n\ncommands:\n");
  for (const Command& c : kCommands) std::fprintf(out, "  %-5s %s\n", c.name, c.summary);
  std::fprintf(out,
               "\nRun 'pkeyctl COMMAND --help' for a command's options.\n\n"
               "Environment:\n"
               "  PKEYS_BACKEND=auto|x86-pku|emulated  chooses the backend\n"
               "  PKEYS_WX=off|log|deny  W^X for pkeys' own protection calls (unset: off);\n"
               "      any other value denies, and demo, bench and run refuse it (status 2)\n\n"
               "Exit status:\n"
               "  0  success\n"
               "  1  the operation failed (the message on stderr says why)\n"
               "  2  usage error: unknown command or option, missing or bad argument\n"
               "  scan: 0 no gadgets outside pkeys' own switch routines, 1 gadgets found,\n"
               "      2 usage error or a target it cannot scan (as grep and diff)\n"
               "  run: PROGRAM's own status, or 128+N when signal N killed it; 125 pkeyctl\n"
               "      failed, 126 PROGRAM cannot be executed, 127 PROGRAM not found,\n"
               "      2 usage error (PROGRAM did not run)\n");
}

bool asks_for_help(int argc, char** argv) {
  for (int i = 1; i < argc && std::strcmp(argv[i], "--") != 0; ++i)
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) return true;
  return false;
}

}  // namespace

const char* pkeyctl::unrecognised_pkeys_wx() {
  const char* s = std::getenv("PKEYS_WX");
  if (!s || !*s) return nullptr;
  for (const char* known : {"off", "log", "deny"})
    if (std::strcmp(s, known) == 0) return nullptr;
  return s;
}

namespace {

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const std::string_view arg = argv[1];
  if (arg == "--help" || arg == "-h") {
    usage(stdout);
    return 0;
  }
  if (arg == "--version") {
    std::printf("pkeyctl %s\n", PKEYS_VERSION);
    return 0;
  }
  for (const Command& c : kCommands) {
    if (arg != c.name) continue;
    const char* wx = pkeyctl::unrecognised_pkeys_wx();
    if (wx && c.needs_valid_pkeys_wx && !asks_for_help(argc - 1, argv + 1)) {
      std::fprintf(stderr,
                   "pkeyctl %s: PKEYS_WX='%s' is not off, log or deny (pkeys would deny every writable-and-"
                   "executable protection): fix or unset it\n",
                   c.name, wx);
      return 2;
    }
    return c.run(argc - 1, argv + 1);
  }
  std::fprintf(stderr, "pkeyctl: unknown command '%s'\n", argv[1]);
  usage(stderr);
  return 2;
}
