// SPDX-License-Identifier: MIT
// A read-only view of an ELF64 x86-64 file: executable sections, program
// headers, function symbols and pkeys' sanctioned WRPKRU sites.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace pkeyctl {

class ElfImage {
 public:
  // Files larger than this are refused: the whole file is read into memory.
  static constexpr std::uint64_t kMaxFileSize = std::uint64_t{1} << 30;  // 1 GiB

  struct Section {
    std::string name;
    std::uint64_t addr, offset, size;
  };
  struct Segment {  // PT_LOAD
    std::uint64_t vaddr, offset, filesz;
    std::uint32_t flags;
  };

  // Reads `path`; nullopt, with `error` set to "PATH: why", unless it is a
  // regular file of at most kMaxFileSize bytes holding a whole ELF64 x86-64
  // image: every header, segment and section inside the file.
  static std::optional<ElfImage> load(const std::string& path, std::string* error);

  // The executable sections or, in a file without section headers, the
  // executable PT_LOAD segments (named "[segment N]").
  const std::vector<Section>& executable_sections() const { return exec_sections_; }
  const std::vector<std::uint8_t>& bytes() const { return bytes_; }
  // The function holding `vaddr`, demangled, as "name+0xoff", or "".
  std::string symbol_at(std::uint64_t vaddr) const;
  // The virtual address of file offset `offset`, if a PT_LOAD maps it.
  std::optional<std::uint64_t> vaddr_of_offset(std::uint64_t offset) const;
  // Whether pkeys recorded a WRPKRU at `vaddr` (section pkeys_wrpkru_sites).
  bool sanctioned_wrpkru(std::uint64_t vaddr) const;

 private:
  struct Symbol {
    std::uint64_t addr, size;
    std::string name;
  };
  // Empty when the image is whole, else why not.
  std::string parse();

  std::vector<std::uint8_t> bytes_;
  std::vector<Section> exec_sections_;
  std::vector<Segment> segments_;
  std::vector<Symbol> symbols_;  // sorted by address
  std::vector<std::uint64_t> wrpkru_sites_;  // sorted
};

}  // namespace pkeyctl
