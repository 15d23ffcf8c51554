// SPDX-License-Identifier: MIT
#include "os/proc_maps.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace pkeys::os {
namespace {

// Reads a whole /proc file; procfs files report size 0, so read to EOF.
bool read_file(const char* path, std::string& out) {
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[16384];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      ::close(fd);
      return false;
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return true;
}

// Parses "start-end perms offset dev inode name" at the start of `line`.
bool parse_header(const char* line, const char* line_end, Mapping& m) {
  char* p;
  m.start = std::strtoull(line, &p, 16);
  if (*p != '-') return false;
  m.end = std::strtoull(p + 1, &p, 16);
  if (*p != ' ') return false;
  const char* perms = p + 1;
  const char* q = perms;
  while (q < line_end && *q != ' ') ++q;
  m.perms.assign(perms, q);
  // Skip offset, dev, inode: three more fields.
  for (int field = 0; field < 3 && q < line_end; ++field) {
    while (q < line_end && *q == ' ') ++q;
    while (q < line_end && *q != ' ') ++q;
  }
  while (q < line_end && *q == ' ') ++q;
  m.name.assign(q, line_end);
  m.protection_key = -1;
  return true;
}

}  // namespace

std::optional<std::vector<std::pair<std::uintptr_t, std::uintptr_t>>> mapped_ranges_of_self() {
  std::vector<std::pair<std::uintptr_t, std::uintptr_t>> out;
  std::string text;
  if (!read_file("/proc/self/maps", text)) return std::nullopt;
  const char* s = text.data();
  const char* end = s + text.size();
  while (s < end) {
    const char* eol = static_cast<const char*>(std::memchr(s, '\n', end - s));
    if (!eol) eol = end;
    Mapping m;
    if (parse_header(s, eol, m)) {
      if (!out.empty() && out.back().second == m.start)
        out.back().second = m.end;
      else
        out.emplace_back(m.start, m.end);
    }
    s = eol + 1;
  }
  return out;
}

bool for_each_mapping(int pid, const std::function<void(const Mapping&)>& f) {
  char path[64];
  if (pid == 0)
    std::snprintf(path, sizeof path, "/proc/self/smaps");
  else
    std::snprintf(path, sizeof path, "/proc/%d/smaps", pid);
  std::string text;
  if (!read_file(path, text)) return false;
  const char* s = text.data();
  const char* end = s + text.size();
  Mapping cur;
  bool have = false;
  while (s < end) {
    const char* eol = static_cast<const char*>(std::memchr(s, '\n', end - s));
    if (!eol) eol = end;
    // Field lines start with a capitalised name; mapping lines with hex.
    const bool field = *s >= 'A' && *s <= 'Z';
    if (!field) {
      if (have) f(cur);
      have = parse_header(s, eol, cur);
    } else if (have && eol - s > 14 && std::strncmp(s, "ProtectionKey:", 14) == 0) {
      cur.protection_key = static_cast<int>(std::strtol(s + 14, nullptr, 10));
    }
    s = eol + 1;
  }
  if (have) f(cur);
  return true;
}

int kernel_key_in_use(int key) noexcept {
  bool field_seen = false, in_use = false;
  try {
    const bool read = for_each_mapping(0, [&](const Mapping& m) {
      if (m.protection_key < 0) return;
      field_seen = true;
      in_use |= m.protection_key == key;
    });
    if (!read || !field_seen) return -ENOSYS;
  } catch (...) {
    return -ENOSYS;
  }
  return in_use ? 1 : 0;
}

}  // namespace pkeys::os
