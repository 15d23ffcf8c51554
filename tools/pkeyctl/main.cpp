// SPDX-License-Identifier: MIT
// pkeyctl: inspect and demonstrate memory protection keys.
//
// Exit status: 0 success, 1 the operation failed, 2 usage error.
#include <cstdio>
#include <cstring>
#include <string_view>

#include "commands.hpp"

namespace {

struct Command {
  const char* name;
  int (*run)(int, char**);
  const char* summary;
};

constexpr Command kCommands[] = {
    {"info", pkeyctl::info, "CPU and kernel support, the backend and why, keys and rights"},
    {"demo", pkeyctl::demo, "keep a secret in a key-protected page and show the key at work"},
    {"maps", pkeyctl::maps, "a process's mappings grouped by protection key (--json for scripts)"},
    {"bench", pkeyctl::bench, "run pkeys_bench and write a report with plots"},
    {"scan", pkeyctl::scan, "find WRPKRU/XRSTOR gadgets in a process or an ELF file"},
    {"run", pkeyctl::run, "run a program with W^X enforced (--deny-wx) or reported (--log-wx)"},
};

void usage(std::FILE* out) {
  std::fprintf(out,
               "usage: pkeyctl [--help] [--version] COMMAND [ARGS]\n\n"
               "Memory protection keys as a managed, safe process resource.\n\ncommands:\n");
  for (const Command& c : kCommands) std::fprintf(out, "  %-5s %s\n", c.name, c.summary);
  std::fprintf(out,
               "\nRun 'pkeyctl COMMAND --help' for a command's options.\n"
               "Environment: PKEYS_BACKEND=auto|x86-pku|emulated chooses the backend.\n"
               "Exit status: 0 success, 1 failure, 2 usage error.\n");
}

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
  for (const Command& c : kCommands)
    if (arg == c.name) return c.run(argc - 1, argv + 1);
  std::fprintf(stderr, "pkeyctl: unknown command '%s'\n", argv[1]);
  usage(stderr);
  return 2;
}
