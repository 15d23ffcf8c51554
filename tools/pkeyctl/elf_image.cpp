// SPDX-License-Identifier: MIT
#include "elf_image.hpp"

#include <elf.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>

namespace pkeyctl {
namespace {

template <class T>
bool read_at(const std::vector<std::uint8_t>& b, std::uint64_t off, T* out) {
  if (off > b.size() || b.size() - off < sizeof(T)) return false;
  std::memcpy(out, b.data() + off, sizeof(T));
  return true;
}

}  // namespace

std::optional<ElfImage> ElfImage::load(const std::string& path, std::string* error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *error = "cannot open " + path;
    return std::nullopt;
  }
  ElfImage img;
  img.bytes_.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  const auto& b = img.bytes_;
  Elf64_Ehdr eh;
  if (!read_at(b, 0, &eh) || std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64) {
    *error = path + " is not an ELF64 file";
    return std::nullopt;
  }
  for (unsigned i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr ph;
    if (read_at(b, eh.e_phoff + std::uint64_t{i} * eh.e_phentsize, &ph) && ph.p_type == PT_LOAD)
      img.segments_.push_back({ph.p_vaddr, ph.p_offset, ph.p_filesz});
  }
  std::vector<Elf64_Shdr> sh(eh.e_shnum);
  for (unsigned i = 0; i < eh.e_shnum; ++i)
    if (!read_at(b, eh.e_shoff + std::uint64_t{i} * eh.e_shentsize, &sh[i])) sh.resize(i);
  auto name_of = [&](const Elf64_Shdr& s) -> std::string {
    if (eh.e_shstrndx >= sh.size()) return "";
    const std::uint64_t off = sh[eh.e_shstrndx].sh_offset + s.sh_name;
    if (off >= b.size()) return "";
    return std::string(reinterpret_cast<const char*>(b.data() + off), strnlen(reinterpret_cast<const char*>(b.data() + off), b.size() - off));
  };
  for (const Elf64_Shdr& s : sh) {
    const std::string name = name_of(s);
    if ((s.sh_flags & SHF_EXECINSTR) && s.sh_type == SHT_PROGBITS && s.sh_offset + s.sh_size <= b.size())
      img.exec_sections_.push_back({name, s.sh_addr, s.sh_offset, s.sh_size});
    if (name == "pkeys_wrpkru_sites") {
      for (std::uint64_t o = 0; o + 4 <= s.sh_size; o += 4) {
        std::int32_t rel;
        if (read_at(b, s.sh_offset + o, &rel)) img.wrpkru_sites_.push_back(s.sh_addr + o + static_cast<std::int64_t>(rel));
      }
    }
    if ((s.sh_type == SHT_SYMTAB || s.sh_type == SHT_DYNSYM) && s.sh_link < sh.size()) {
      const Elf64_Shdr& strtab = sh[s.sh_link];
      for (std::uint64_t o = 0; o + sizeof(Elf64_Sym) <= s.sh_size; o += sizeof(Elf64_Sym)) {
        Elf64_Sym sym;
        if (!read_at(b, s.sh_offset + o, &sym) || ELF64_ST_TYPE(sym.st_info) != STT_FUNC || sym.st_value == 0) continue;
        const std::uint64_t no = strtab.sh_offset + sym.st_name;
        if (no >= b.size()) continue;
        img.symbols_.push_back({sym.st_value, sym.st_size,
                                std::string(reinterpret_cast<const char*>(b.data() + no),
                                            strnlen(reinterpret_cast<const char*>(b.data() + no), b.size() - no))});
      }
    }
  }
  std::sort(img.symbols_.begin(), img.symbols_.end(), [](const Symbol& x, const Symbol& y) { return x.addr < y.addr; });
  std::sort(img.wrpkru_sites_.begin(), img.wrpkru_sites_.end());
  return img;
}

std::string ElfImage::symbol_at(std::uint64_t vaddr) const {
  auto it = std::upper_bound(symbols_.begin(), symbols_.end(), vaddr,
                             [](std::uint64_t a, const Symbol& s) { return a < s.addr; });
  while (it != symbols_.begin()) {
    --it;
    if (vaddr < it->addr + std::max<std::uint64_t>(it->size, 1)) {
      char off[32];
      std::snprintf(off, sizeof off, "+0x%llx", static_cast<unsigned long long>(vaddr - it->addr));
      return it->name + off;
    }
    if (it->size != 0) break;
  }
  return "";
}

std::optional<std::uint64_t> ElfImage::vaddr_of_offset(std::uint64_t offset) const {
  for (const Segment& s : segments_)
    if (offset >= s.offset && offset < s.offset + s.filesz) return s.vaddr + (offset - s.offset);
  return std::nullopt;
}

bool ElfImage::sanctioned_wrpkru(std::uint64_t vaddr) const {
  return std::binary_search(wrpkru_sites_.begin(), wrpkru_sites_.end(), vaddr);
}

}  // namespace pkeyctl
