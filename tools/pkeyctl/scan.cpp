// SPDX-License-Identifier: MIT
// pkeyctl scan: finds the instructions that change protection-key rights
// (WRPKRU, 0F 01 EF, and XRSTOR, 0F AE /5 with a memory operand) at every
// byte offset of executable code, as ERIM's binary inspection does: an
// attacker can jump into the middle of another instruction. Sequences at
// pkeys' own recorded switch sites (section pkeys_wrpkru_sites) are
// allowed; any other makes the exit status 1.
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "commands.hpp"
#include "elf_image.hpp"

namespace pkeyctl {
namespace {

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

// Reads [start, end) of process `pid`'s memory; false when not permitted.
bool read_memory(int pid, std::uint64_t start, std::uint64_t end, std::vector<std::uint8_t>& out) {
  const std::string path = "/proc/" + std::to_string(pid) + "/mem";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  out.resize(end - start);
  std::size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(start + done));
    if (n <= 0) break;
    done += static_cast<std::size_t>(n);
  }
  ::close(fd);
  return done == out.size();
}

int scan_process(int pid, std::vector<Finding>& out) {
  std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
  if (!maps) {
    std::fprintf(stderr, "pkeyctl scan: no process %d (or /proc/%d/maps unreadable)\n", pid, pid);
    return 3;
  }
  std::map<std::string, std::unique_ptr<ElfImage>> images;
  std::string line;
  while (std::getline(maps, line)) {
    unsigned long long start, end, offset;
    char perms[8] = {};
    int name_at = 0;
    if (std::sscanf(line.c_str(), "%llx-%llx %7s %llx %*s %*s %n", &start, &end, perms, &offset, &name_at) < 4) continue;
    if (!std::strchr(perms, 'x')) continue;
    const std::string name = name_at > 0 ? line.substr(static_cast<std::size_t>(name_at)) : "";
    if (name == "[vsyscall]") continue;  // fixed kernel page, not readable
    ElfImage* img = nullptr;
    if (!name.empty() && name[0] == '/') {
      auto& slot = images[name];
      if (!slot) {
        std::string error;
        if (auto loaded = ElfImage::load(name, &error)) slot = std::make_unique<ElfImage>(std::move(*loaded));
      }
      img = slot.get();
    }
    std::vector<std::uint8_t> bytes;
    if (!read_memory(pid, start, end, bytes)) {
      if (!img || offset + (end - start) > img->bytes().size()) {
        std::fprintf(stderr, "pkeyctl scan: cannot read %s of process %d (needs ptrace access)\n",
                     name.empty() ? "[anon]" : name.c_str(), pid);
        return 3;
      }
      bytes.assign(img->bytes().begin() + static_cast<long>(offset),
                   img->bytes().begin() + static_cast<long>(offset + (end - start)));
    }
    find_sequences(bytes.data(), bytes.size(), [&](std::size_t i, const char* kind) {
      Finding f{start + i, kind, name.empty() ? "[anon]" : name, "", false};
      if (img) {
        if (const auto vaddr = img->vaddr_of_offset(offset + i)) {
          f.symbol = img->symbol_at(*vaddr);
          f.allowed = std::strcmp(kind, "WRPKRU") == 0 && img->sanctioned_wrpkru(*vaddr);
        }
      }
      out.push_back(std::move(f));
    });
  }
  return 0;
}

}  // namespace

int scan(int argc, char** argv) {
  if (argc != 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    const bool help = argc == 2;
    std::fprintf(help ? stdout : stderr,
                 "usage: pkeyctl scan PID|FILE\n\n"
                 "Finds WRPKRU (0F 01 EF) and XRSTOR (0F AE /5) byte sequences, at every byte\n"
                 "offset, in the executable mappings of a live process or the executable\n"
                 "sections of an ELF file: the gadgets that would let an attacker change\n"
                 "protection-key rights. Lists each with address, section or mapping and\n"
                 "symbol; WRPKRUs that pkeys itself emitted (recorded in the section\n"
                 "pkeys_wrpkru_sites) are allowed.\n\n"
                 "Exit status: 0 none outside pkeys' own switch routines, 1 some found,\n"
                 "2 usage error, 3 the process or file could not be read.\n");
    return help ? 0 : 2;
  }
  const std::string target = argv[1];
  std::vector<Finding> found;
  const bool is_pid = target.find_first_not_of("0123456789") == std::string::npos;
  if (is_pid) {
    if (int r = scan_process(std::stoi(target), found); r != 0) return r;
  } else {
    std::string error;
    const auto img = ElfImage::load(target, &error);
    if (!img) {
      std::fprintf(stderr, "pkeyctl scan: %s\n", error.c_str());
      return 3;
    }
    scan_file(*img, found);
  }
  int outside = 0;
  std::printf("%s %s\n", is_pid ? "process" : "file", target.c_str());
  for (const Finding& f : found) {
    outside += !f.allowed;
    std::printf("  0x%016llx  %-6s  %-9s  %s  %s\n", static_cast<unsigned long long>(f.address), f.kind,
                f.allowed ? "allowed" : "GADGET", f.where.c_str(), f.symbol.empty() ? "?" : f.symbol.c_str());
  }
  std::printf("%zu sequence(s), %d outside pkeys' own switch routines\n", found.size(), outside);
  return outside == 0 ? 0 : 1;
}

}  // namespace pkeyctl
