// SPDX-License-Identifier: MIT
// A read-only view of an ELF64 file: executable sections, program
// headers, function symbols and pkeys' sanctioned WRPKRU sites.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace pkeyctl {

class ElfImage {
 public:
  struct Section {
    std::string name;
    std::uint64_t addr, offset, size;
  };
  struct Segment {  // PT_LOAD
    std::uint64_t vaddr, offset, filesz;
  };

  // Reads `path`; nullopt (with `error` set) when it is not a readable ELF64.
  static std::optional<ElfImage> load(const std::string& path, std::string* error);

  const std::vector<Section>& executable_sections() const { return exec_sections_; }
  const std::vector<std::uint8_t>& bytes() const { return bytes_; }
  // The function holding `vaddr`, as "name+0xoff", or "".
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
  std::vector<std::uint8_t> bytes_;
  std::vector<Section> exec_sections_;
  std::vector<Segment> segments_;
  std::vector<Symbol> symbols_;  // sorted by address
  std::vector<std::uint64_t> wrpkru_sites_;  // sorted
};

}  // namespace pkeyctl
