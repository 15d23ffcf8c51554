// SPDX-License-Identifier: MIT
// pkeyctl maps: every mapping of a process with its protection key, grouped
// by key, from the ProtectionKey field of /proc/PID/smaps. Where the kernel
// or CPU reports no keys it says so, and for its own process falls back to
// the ranges pkeys recorded.
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "commands.hpp"
#include "pkeys/pkeys.h"

namespace pkeyctl {
namespace {

struct Mapping {
  std::uint64_t start = 0, end = 0;
  std::string perms, name;
  int key = -1;
};

// Reads /proc/PID/smaps; false, with `error` saying why, when unreadable.
// `has_keys`: any ProtectionKey field seen.
bool read_smaps(int pid, std::vector<Mapping>& out, bool* has_keys, std::string* error) {
  const std::string path = "/proc/" + std::to_string(pid) + "/smaps";
  std::FILE* in = std::fopen(path.c_str(), "re");
  if (!in) {
    *error = errno == ENOENT ? "no process " + std::to_string(pid) : "cannot read " + path + ": " + std::strerror(errno);
    return false;
  }
  std::unique_ptr<std::FILE, decltype(&std::fclose)> closer(in, &std::fclose);
  char* raw = nullptr;
  std::size_t cap = 0;
  std::unique_ptr<char*, void (*)(char**)> line_closer(&raw, [](char** p) { std::free(*p); });
  *has_keys = false;
  for (ssize_t len; (len = ::getline(&raw, &cap, in)) > 0;) {
    std::string line(raw, static_cast<std::size_t>(len));
    if (line.back() == '\n') line.pop_back();
    unsigned long long lo, hi;
    char perms[8];
    int name_at = 0;
    if (std::sscanf(line.c_str(), "%llx-%llx %7s %*s %*s %*s %n", &lo, &hi, perms, &name_at) >= 3 &&
        line.find(':') > line.find(' ')) {
      out.push_back({lo, hi, perms, name_at > 0 ? line.substr(static_cast<std::size_t>(name_at)) : "", -1});
    } else if (!out.empty() && line.rfind("ProtectionKey:", 0) == 0) {
      out.back().key = std::atoi(line.c_str() + 14);
      *has_keys = true;
    }
  }
  if (std::ferror(in)) {
    *error = "cannot read " + path + ": " + std::strerror(errno);
    return false;
  }
  return true;
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    o += c;
  }
  return o;
}

std::string label_of(int key, bool self) {
  if (!self || key <= 0) return "";
  char buf[64];
  return pkeys_get_label(key, buf, sizeof buf) > 0 ? buf : "";
}

// Linux's execute-only code: PROT_EXEC alone under a nonzero key (the
// kernel's execute-only key, or one the program chose): executable,
// unreadable. Without PKU an --x mapping is readable, and has no key.
bool execute_only(const Mapping& m) { return m.key > 0 && m.perms.size() >= 3 && m.perms.compare(0, 3, "--x") == 0; }

// A key whose every mapping is execute-only: the kernel's execute-only key
// (pkeyctl run --execute-only, mprotect(PROT_EXEC)).
bool execute_only_key(const std::vector<Mapping>& list) {
  for (const Mapping& m : list)
    if (!execute_only(m)) return false;
  return !list.empty();
}

std::string prot_string(int prot) {
  std::string s = "---";
  if (prot & PROT_READ) s[0] = 'r';
  if (prot & PROT_WRITE) s[1] = 'w';
  if (prot & PROT_EXEC) s[2] = 'x';
  return s;
}

}  // namespace

int maps(int argc, char** argv) {
  bool json = false;
  std::string pid;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--json") == 0) {
      json = true;
    } else if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      std::printf(
          "usage: pkeyctl maps [--json] PID|self\n\n"
          "Lists every mapping of a process with its protection key (the ProtectionKey\n"
          "field of /proc/PID/smaps), grouped by key with sizes and, for pkeyctl's own\n"
          "process, labels. Where the kernel or CPU reports no keys it says so; for its\n"
          "own process it then shows the ranges pkeys recorded. Execute-only code (--x\n"
          "under a nonzero key, as pkeyctl run --execute-only makes it) is marked so.\n\n"
          "Exit status: 0 success, 1 the process could not be read (no such process,\n"
          "or no permission: another user's process needs ptrace access), 2 usage error.\n");
      return 0;
    } else if (pid.empty()) {
      pid = argv[i];
    } else {
      std::fprintf(stderr, "pkeyctl maps: unexpected argument '%s'\n", argv[i]);
      return 2;
    }
  }
  if (pid.empty() || (pid != "self" && pid.find_first_not_of("0123456789") != std::string::npos)) {
    std::fprintf(stderr, "usage: pkeyctl maps [--json] PID|self\n");
    return 2;
  }
  // "self" is this process; a number too large for a pid names none.
  int number = 0;
  if (pid == "self") {
    number = static_cast<int>(::getpid());
  } else if (const auto [end, ec] = std::from_chars(pid.data(), pid.data() + pid.size(), number);
             ec != std::errc() || number <= 0) {
    std::fprintf(stderr, "pkeyctl maps: no process %s\n", pid.c_str());
    return 1;
  }
  const bool self = number == static_cast<int>(::getpid());
  std::vector<Mapping> mappings;
  bool has_keys = false;
  if (std::string error; !read_smaps(number, mappings, &has_keys, &error)) {
    std::fprintf(stderr, "pkeyctl maps: %s\n", error.c_str());
    return 1;
  }
  // Group by key: from the kernel, or from pkeys' own records.
  std::string source = "smaps";
  std::map<int, std::vector<Mapping>> groups;
  if (has_keys) {
    for (const Mapping& m : mappings) groups[m.key].push_back(m);
  } else if (self) {
    source = "pkeys records";
    std::vector<pkeys_range> ranges(static_cast<std::size_t>(pkeys_get_ranges(nullptr, 0)));
    pkeys_get_ranges(ranges.data(), static_cast<int>(ranges.size()));
    for (const pkeys_range& r : ranges) {
      const auto start = reinterpret_cast<std::uint64_t>(r.start);
      const int group = r.pkey >= 0 ? r.pkey : -r.vkey - 1;  // vkeys as negative groups
      groups[group].push_back({start, start + r.len, prot_string(r.prot), r.vkey ? "vkey " + std::to_string(r.vkey) : "", group});
    }
  } else {
    source = "none";
  }

  if (json) {
    std::printf("{\"pid\": %d, \"source\": \"%s\", \"keys\": [", number, source.c_str());
    bool first = true;
    for (const auto& [key, list] : groups) {
      std::uint64_t bytes = 0;
      for (const Mapping& m : list) bytes += m.end - m.start;
      std::printf("%s\n  {\"key\": %d, \"bytes\": %llu, \"label\": \"%s\", \"execute_only\": %s, \"mappings\": [",
                  first ? "" : ",", key, static_cast<unsigned long long>(bytes), json_escape(label_of(key, self)).c_str(),
                  source == "smaps" && execute_only_key(list) ? "true" : "false");
      first = false;
      for (std::size_t i = 0; i < list.size(); ++i)
        std::printf("%s{\"start\": \"0x%llx\", \"end\": \"0x%llx\", \"perms\": \"%s\", \"execute_only\": %s, "
                    "\"name\": \"%s\"}", i ? ", " : "",
                    static_cast<unsigned long long>(list[i].start), static_cast<unsigned long long>(list[i].end),
                    list[i].perms.c_str(), source == "smaps" && execute_only(list[i]) ? "true" : "false",
                    json_escape(list[i].name).c_str());
      std::printf("]}");
    }
    std::printf("\n]}\n");
    return 0;
  }
  std::printf("process %d: protection keys from %s\n", number,
              source == "smaps" ? "/proc/PID/smaps" : source.c_str());
  if (source == "none") {
    std::printf("this kernel or CPU reports no ProtectionKey in smaps (no PKU); pkeys' own records exist\n"
                "only for the calling process: run the program with pkeys and ask it, or use 'self'\n");
    return 0;
  }
  if (!has_keys)
    std::printf("(the kernel reports no ProtectionKey here: showing the ranges pkeys recorded)\n");
  for (const auto& [key, list] : groups) {
    std::uint64_t bytes = 0;
    for (const Mapping& m : list) bytes += m.end - m.start;
    const std::string label = label_of(key, self);
    const bool xo_key = source == "smaps" && execute_only_key(list);
    if (key >= 0)
      std::printf("key %d%s%s%s%s: %zu mapping(s), %llu KiB\n", key, label.empty() ? "" : " \"", label.c_str(),
                  label.empty() ? "" : "\"", xo_key ? " (execute-only code: --x, unreadable)" : "", list.size(),
                  static_cast<unsigned long long>(bytes / 1024));
    else
      std::printf("vkey %d: %zu range(s), %llu KiB\n", -key - 1, list.size(), static_cast<unsigned long long>(bytes / 1024));
    for (const Mapping& m : list)
      std::printf("  %012llx-%012llx %s %s%s\n", static_cast<unsigned long long>(m.start),
                  static_cast<unsigned long long>(m.end), m.perms.c_str(), m.name.c_str(),
                  !xo_key && source == "smaps" && execute_only(m) ? " (execute-only)" : "");
  }
  return 0;
}

}  // namespace pkeyctl
