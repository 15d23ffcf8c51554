// SPDX-License-Identifier: MIT
// pkeyctl scan: finds the instructions that change protection-key rights
// (WRPKRU, 0F 01 EF, and XRSTOR, 0F AE /5 with a memory operand) at every
// byte offset of executable code, as ERIM's binary inspection does: an
// attacker can jump into the middle of another instruction. Sequences at
// pkeys' own recorded switch sites (section pkeys_wrpkru_sites) are
// allowed; any other makes the exit status 1. A target that cannot be
// scanned whole is an error (status 2), never reported clean. A process's
// region that is unmapped or replaced between reading its map and reading
// its memory is no failure (a process could keep itself unscannable so):
// the scan skips it and says how many it skipped.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "commands.hpp"
#include "elf_image.hpp"

namespace pkeyctl {
namespace {

constexpr int kClean = 0, kGadgets = 1, kError = 2;

const char* const kUsage = "usage: pkeyctl scan PID|self|FILE\n";

struct Finding {
  std::uint64_t address;
  const char* kind;
  std::string where;   // section or mapping
  std::string symbol;
  bool allowed;
};

// Calls f(index, kind) for each rights-changing sequence in [p, p+n).
template <class F>
void find_sequences(const std::uint8_t* p, std::size_t n, F&& f) {
  for (std::size_t i = 0; i + 3 <= n; ++i) {
    if (p[i] != 0x0f) continue;
    if (p[i + 1] == 0x01 && p[i + 2] == 0xef) f(i, "WRPKRU");
    // XRSTOR m: 0F AE, ModRM.reg = 5, ModRM.mod != 3 (mod 3 is LFENCE).
    if (p[i + 1] == 0xae && ((p[i + 2] >> 3) & 7) == 5 && (p[i + 2] >> 6) != 3) f(i, "XRSTOR");
  }
}

void scan_file(const ElfImage& img, std::vector<Finding>& out) {
  for (const auto& sec : img.executable_sections())
    find_sequences(img.bytes().data() + sec.offset, sec.size, [&](std::size_t i, const char* kind) {
      const std::uint64_t vaddr = sec.addr + i;
      out.push_back({vaddr, kind, sec.name, img.symbol_at(vaddr),
                     std::strcmp(kind, "WRPKRU") == 0 && img.sanctioned_wrpkru(vaddr)});
    });
}

// Where a read of a process's memory failed: the chunk being read (where a
// scan can resume) and the address itself. errno says why.
struct ReadFailure {
  std::uint64_t chunk, address;
};

constexpr std::uint64_t kKeep = 2;  // a sequence's length less one

// Scans [from, end) of a process through its /proc/PID/mem descriptor in
// chunks (a mapping may be huge and mostly unpopulated), calling
// f(address, kind). Consecutive chunks overlap by kKeep bytes, so a
// sequence across a boundary is found, once. The failure, errno set, when
// a read fails; what was read before it has been scanned.
template <class F>
std::optional<ReadFailure> scan_memory(int mem_fd, std::uint64_t from, std::uint64_t end, F&& f) {
  constexpr std::size_t kChunk = std::size_t{1} << 20;
  std::vector<std::uint8_t> buf(kKeep + kChunk);
  std::size_t kept = 0;  // bytes carried over from the previous chunk
  for (std::uint64_t at = from; at < end;) {
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, end - at));
    for (std::size_t got = 0; got < want;) {
      const ssize_t n = ::pread(mem_fd, buf.data() + kept + got, want - got, static_cast<off_t>(at + got));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        if (n == 0) errno = EIO;
        return ReadFailure{at, at + got};
      }
      got += static_cast<std::size_t>(n);
    }
    const std::uint64_t base = at - kept;  // the address of buf[0]
    find_sequences(buf.data(), kept + want, [&](std::size_t i, const char* kind) { f(base + i, kind); });
    const std::size_t total = kept + want;
    kept = std::min<std::size_t>(kKeep, total);
    std::memmove(buf.data(), buf.data() + total - kept, kept);
    at += want;
  }
  return std::nullopt;
}

// The line of `proc`/maps whose mapping holds `address` now ("" for none),
// or nullopt when the process has no memory any more (it exited).
std::optional<std::string> mapping_now(const std::string& proc, std::uint64_t address) {
  std::FILE* maps = std::fopen((proc + "/maps").c_str(), "re");
  if (!maps) return std::nullopt;
  std::string found;
  bool any = false;
  char* raw = nullptr;
  std::size_t cap = 0;
  for (ssize_t len; (len = ::getline(&raw, &cap, maps)) > 0;) {
    any = true;
    unsigned long long start, end;
    if (std::sscanf(raw, "%llx-%llx", &start, &end) != 2 || address < start || address >= end) continue;
    found.assign(raw, static_cast<std::size_t>(len));
    if (found.back() == '\n') found.pop_back();
    break;
  }
  std::free(raw);
  std::fclose(maps);
  if (!any) return std::nullopt;  // a zombie's map is empty
  return found;
}

// Scans the executable mappings of process `pid`, counting in `vanished`
// those unmapped or replaced while being read; false, with `error` set,
// when any other cannot be read.
bool scan_process(int pid, std::vector<Finding>& out, int* vanished, std::string* error) {
  const std::string proc = "/proc/" + std::to_string(pid);
  std::FILE* maps = std::fopen((proc + "/maps").c_str(), "re");
  if (!maps) {
    *error = errno == ENOENT ? "no process " + std::to_string(pid)
                             : "cannot read " + proc + "/maps: " + std::strerror(errno);
    return false;
  }
  std::unique_ptr<std::FILE, decltype(&std::fclose)> maps_closer(maps, &std::fclose);
  // Readable for our own process, or with ptrace access to another.
  const int mem_fd = ::open((proc + "/mem").c_str(), O_RDONLY | O_CLOEXEC);
  const int mem_errno = errno;
  struct Closer {
    int fd;
    ~Closer() {
      if (fd >= 0) ::close(fd);
    }
  } mem_closer{mem_fd};

  std::map<std::string, std::unique_ptr<ElfImage>> images;
  char* raw = nullptr;
  std::size_t cap = 0;
  std::unique_ptr<char*, void (*)(char**)> line_closer(&raw, [](char** p) { std::free(*p); });
  for (ssize_t len; (len = ::getline(&raw, &cap, maps)) > 0;) {
    std::string line(raw, static_cast<std::size_t>(len));
    if (line.back() == '\n') line.pop_back();
    unsigned long long start, end, offset;
    char perms[8] = {};
    int name_at = 0;
    if (std::sscanf(line.c_str(), "%llx-%llx %7s %llx %*s %*s %n", &start, &end, perms, &offset, &name_at) < 4) continue;
    if (!std::strchr(perms, 'x')) continue;
    const std::string name = name_at > 0 ? line.substr(static_cast<std::size_t>(name_at)) : "";
    if (name == "[vsyscall]") continue;  // fixed kernel page, not readable
    const std::string where = name.empty() ? "[anon]" : name;
    ElfImage* img = nullptr;
    if (!name.empty() && name[0] == '/') {
      auto& slot = images[name];
      if (!slot) {
        std::string ignored;  // deleted or replaced files: memory is still read
        if (auto loaded = ElfImage::load(name, &ignored)) slot = std::make_unique<ElfImage>(std::move(*loaded));
      }
      img = slot.get();
    }
    std::vector<Finding> found;
    // `off` from the mapping's start.
    const auto record = [&](std::uint64_t off, const char* kind) {
      Finding f{start + off, kind, where, "", false};
      if (img) {
        if (const auto vaddr = img->vaddr_of_offset(offset + off)) {
          f.symbol = img->symbol_at(*vaddr);
          f.allowed = std::strcmp(kind, "WRPKRU") == 0 && img->sanctioned_wrpkru(*vaddr);
        }
      }
      found.push_back(std::move(f));
    };
    // A read that fails where the map no longer shows this mapping: it was
    // unmapped or replaced, and is skipped (what was read of it counts). The
    // same mapping there: perhaps a new one just like it, read again.
    constexpr int kReadAttempts = 8;
    errno = mem_errno;
    bool read = mem_fd >= 0;
    std::uint64_t from = start;
    for (int attempt = 1; read; ++attempt) {
      const auto failure =
          scan_memory(mem_fd, from, end, [&](std::uint64_t address, const char* kind) { record(address - start, kind); });
      if (!failure) break;
      const int why = errno;
      const auto now = mapping_now(proc, failure->address);
      if (!now) {
        *error = "process " + std::to_string(pid) + " exited during the scan";
        return false;
      }
      if (*now != line) {
        ++*vanished;
        break;
      }
      errno = why;
      read = attempt < kReadAttempts;
      from = failure->chunk - std::min<std::uint64_t>(kKeep, failure->chunk - start);
    }
    if (!read) {
      const int why = errno;
      // Memory unreadable: a file-backed mapping holds what the file holds
      // (bytes past its end read as zeros).
      if (!img || offset > img->bytes().size()) {
        char range[64];
        std::snprintf(range, sizeof range, "%llx-%llx", start, end);
        *error = "cannot read " + where + " at " + range + " of process " + std::to_string(pid) + " through " +
                 proc + "/mem: " + std::strerror(why) +
                 (why == EACCES || why == EPERM ? " (needs ptrace access: the same user, or root)" : "");
        return false;
      }
      found.clear();
      const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(end - start, img->bytes().size() - offset));
      find_sequences(img->bytes().data() + offset, n, record);
    }
    for (Finding& f : found) out.push_back(std::move(f));
  }
  if (std::ferror(maps)) {
    *error = "cannot read " + proc + "/maps: " + std::strerror(errno);
    return false;
  }
  return true;
}

// The process id `s` names, when it is all digits: 0 if none can exist.
int parse_pid(const std::string& s) {
  int pid = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), pid);
  return ec == std::errc() && end == s.data() + s.size() ? pid : 0;
}

}  // namespace

int scan(int argc, char** argv) {
  if (argc == 2 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
    std::printf(
        "%s\n"
        "Finds WRPKRU (0F 01 EF) and XRSTOR (0F AE /5) byte sequences, at every byte\n"
        "offset, in the executable mappings of a live process (PID, or 'self' for\n"
        "pkeyctl itself) or the executable sections of an ELF file: the gadgets that\n"
        "would let an attacker change protection-key rights. Lists each with address,\n"
        "section or mapping and symbol (demangled); WRPKRUs that pkeys itself emitted\n"
        "(recorded in the section pkeys_wrpkru_sites) are allowed.\n\n"
        "A FILE must be a regular file of at most 1 GiB holding a whole ELF64 x86-64\n"
        "image: a truncated or corrupt one is an error, never reported clean. An\n"
        "argument of digits is a PID; write ./123 for a file of that name. Another\n"
        "user's process needs ptrace access (the same user, or root). A region a\n"
        "process unmaps or replaces while it is being read is skipped, and counted.\n\n"
        "Exit status: 0 no sequences outside pkeys' own switch routines, 1 some\n"
        "found, 2 usage error or a target that cannot be scanned (no such process\n"
        "or file, unreadable, not a whole ELF file), as grep and diff do.\n",
        kUsage);
    return 0;
  }
  if (argc != 2) {
    std::fputs(kUsage, stderr);
    return kError;
  }
  const std::string target = argv[1];
  if (target.empty()) {
    std::fputs("pkeyctl scan: empty argument: expected a PID, 'self' or a file\n", stderr);
    return kError;
  }
  if (target[0] == '-') {
    std::fprintf(stderr, "pkeyctl scan: unknown option '%s' (usage: pkeyctl scan PID|self|FILE)\n", target.c_str());
    return kError;
  }
  std::vector<Finding> found;
  const bool is_pid = target == "self" || target.find_first_not_of("0123456789") == std::string::npos;
  int vanished = 0;  // regions unmapped or replaced while being read
  if (is_pid) {
    const int pid = target == "self" ? static_cast<int>(::getpid()) : parse_pid(target);
    std::string error = "no process " + target;
    if (pid <= 0 || !scan_process(pid, found, &vanished, &error)) {
      std::fprintf(stderr, "pkeyctl scan: %s\n", error.c_str());
      return kError;
    }
    std::printf("process %d%s\n", pid, target == "self" ? " (self)" : "");
  } else {
    std::string error;
    const auto img = ElfImage::load(target, &error);
    if (!img) {
      std::fprintf(stderr, "pkeyctl scan: %s\n", error.c_str());
      return kError;
    }
    scan_file(*img, found);
    std::printf("file %s\n", target.c_str());
  }
  int outside = 0;
  for (const Finding& f : found) {
    outside += !f.allowed;
    std::printf("  0x%016llx  %-6s  %-9s  %s  %s\n", static_cast<unsigned long long>(f.address), f.kind,
                f.allowed ? "allowed" : "GADGET", f.where.c_str(), f.symbol.empty() ? "?" : f.symbol.c_str());
  }
  if (vanished > 0)
    std::printf("%d executable region(s) unmapped or replaced while being read: skipped\n", vanished);
  std::printf("%zu sequence(s), %d outside pkeys' own switch routines\n", found.size(), outside);
  return outside == 0 ? kClean : kGadgets;
}

}  // namespace pkeyctl
