// SPDX-License-Identifier: MIT
#include "os/proc_maps.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

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

namespace {

// PROCMAP_QUERY (Linux 6.11, linux/fs.h), which older headers lack.
struct ProcmapQuery {
  std::uint64_t size, query_flags, query_addr;
  std::uint64_t vma_start, vma_end, vma_flags, vma_page_size, vma_offset, inode;
  std::uint32_t dev_major, dev_minor, vma_name_size, build_id_size;
  std::uint64_t vma_name_addr, build_id_addr;
};
static_assert(sizeof(ProcmapQuery) == 104);
constexpr unsigned long kProcmapQuery = 0xc0686611;  // _IOWR('f', 17, struct procmap_query)
constexpr std::uint64_t kCoveringOrNextVma = 0x10;
constexpr std::uint64_t kVmaProtBits = 0x7;  // readable, writable, executable: as PROT_*
static_assert(PROT_READ == 1 && PROT_WRITE == 2 && PROT_EXEC == 4);

int prot_of_perms(const char* perms) noexcept {
  return (perms[0] == 'r' ? PROT_READ : 0) | (perms[1] == 'w' ? PROT_WRITE : 0) | (perms[2] == 'x' ? PROT_EXEC : 0);
}

}  // namespace

namespace {
// Bumped in every child of fork: a descriptor opened before describes the
// parent's address space. (A getpid per batch would cost a system call
// on the hot path of an emulated rights switch.)
std::atomic<unsigned> g_forks{0};
void count_fork() noexcept { g_forks.fetch_add(1, std::memory_order_relaxed); }
}  // namespace

// Registered at load, never lazily under pkeys' lock: glibc holds its
// atfork lock while it runs prepare handlers, one of which takes pkeys'.
[[gnu::constructor]] static void register_fork_count() { ::pthread_atfork(nullptr, nullptr, count_fork); }

bool SelfProtections::still_ours() const noexcept {
  struct stat st {};
  return fd_ >= 0 && ::fstat(fd_, &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_;
}

bool SelfProtections::open_maps() noexcept {
  // A descriptor pkeys no longer holds (the program closed it, or a fork)
  // is dropped, never closed: its number may be the program's by now.
  fd_ = ::open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  forks_ = g_forks.load(std::memory_order_relaxed);
  struct stat st {};
  if (fd_ >= 0 && ::fstat(fd_, &st) == 0) {
    dev_ = st.st_dev;
    ino_ = st.st_ino;
  }
  return fd_ >= 0;
}

void SelfProtections::start_batch(bool quick_only) noexcept {
  quick_only_ = quick_only;
  have_table_ = false;
  table_.clear();
  if (fd_ >= 0 && forks_ != g_forks.load(std::memory_order_relaxed)) {
    // Inherited across fork: the parent's maps. Closed if still pkeys' own
    // (the child may have closed it and reused the number).
    if (still_ours()) ::close(fd_);
    fd_ = -1;
  }
}

bool SelfProtections::read_table() noexcept {
  have_table_ = true;
  if (fd_ >= 0 && !still_ours()) fd_ = -1;  // closed or replaced behind pkeys' back: never read the program's file
  if ((fd_ < 0 && !open_maps()) || ::lseek(fd_, 0, SEEK_SET) != 0) return false;
  try {
    std::string text;
    char buf[16384];
    for (;;) {
      const ssize_t n = ::read(fd_, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return false;
      if (n == 0) break;
      text.append(buf, static_cast<std::size_t>(n));
    }
    for (const char* s = text.data(); s < text.data() + text.size();) {
      const char* eol = static_cast<const char*>(std::memchr(s, '\n', text.data() + text.size() - s));
      if (!eol) eol = text.data() + text.size();
      Mapping m;
      if (parse_header(s, eol, m) && m.perms.size() >= 3) table_.push_back({m.start, m.end, prot_of_perms(m.perms.c_str())});
      s = eol + 1;
    }
  } catch (const std::bad_alloc&) {
    table_.clear();
    return false;
  }
  return true;
}

bool SelfProtections::query(std::uintptr_t addr, Vma& out, bool* failed) noexcept {
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (fd_ < 0 && !open_maps()) return !(*failed = true);
    ProcmapQuery q{};
    q.size = sizeof q;
    q.query_flags = kCoveringOrNextVma;
    q.query_addr = addr;
    if (::ioctl(fd_, kProcmapQuery, &q) == 0) {
      out = {q.vma_start, q.vma_end, static_cast<int>(q.vma_flags & kVmaProtBits)};
      return true;
    }
    if (errno == ENOENT) return false;  // nothing at or above addr
    if (still_ours()) {
      query_ = false;  // still the file pkeys opened: an older kernel, read the file instead
      return !(*failed = true);
    }
    fd_ = -1;  // closed or replaced behind pkeys' back: open a fresh one
  }
  return !(*failed = true);
}

bool SelfProtections::vma_at_or_after(std::uintptr_t addr, Vma& out, bool* failed) noexcept {
  *failed = false;
  if (query_) {
    if (query(addr, out, failed)) return true;
    if (!*failed) return false;
    if (query_) return false;  // cannot be asked
    *failed = false;
  }
  if (quick_only_) return !(*failed = true);  // an older kernel: only a whole read would tell
  if (!have_table_ && !read_table()) return !(*failed = true);
  if (table_.empty()) return !(*failed = true);  // a process has mappings: the read failed
  for (const Vma& v : table_)  // sorted by address, as the kernel lists them
    if (v.end > addr) {
      out = v;
      return true;
    }
  return false;
}

}  // namespace pkeys::os
