// SPDX-License-Identifier: MIT
#include "elf_image.hpp"

#include <cxxabi.h>
#include <elf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

namespace pkeyctl {
namespace {

template <class T>
bool read_at(const std::vector<std::uint8_t>& b, std::uint64_t off, T* out) {
  if (off > b.size() || b.size() - off < sizeof(T)) return false;
  std::memcpy(out, b.data() + off, sizeof(T));
  return true;
}

// Whether [off, off + len) lies inside a file of `size` bytes (no overflow).
bool inside(std::uint64_t off, std::uint64_t len, std::uint64_t size) { return off <= size && len <= size - off; }

const char* file_type(mode_t mode) {
  if (S_ISDIR(mode)) return "is a directory";
  if (S_ISCHR(mode)) return "not a regular file (a character device)";
  if (S_ISBLK(mode)) return "not a regular file (a block device)";
  if (S_ISFIFO(mode)) return "not a regular file (a FIFO)";
  if (S_ISSOCK(mode)) return "not a regular file (a socket)";
  return "not a regular file";
}

std::string hex(std::uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

// A NUL-terminated string at `off` of string table `tab`, or "".
std::string string_at(const std::vector<std::uint8_t>& b, const Elf64_Shdr& tab, std::uint64_t off) {
  if (tab.sh_type != SHT_STRTAB || off >= tab.sh_size) return "";
  const char* s = reinterpret_cast<const char*>(b.data() + tab.sh_offset + off);
  return std::string(s, strnlen(s, tab.sh_size - off));
}

std::string demangle(const std::string& name) {
  if (name.rfind("_Z", 0) != 0) return name;
  int status = 0;
  std::unique_ptr<char, decltype(&std::free)> out(abi::__cxa_demangle(name.c_str(), nullptr, nullptr, &status),
                                                  &std::free);
  return status == 0 && out ? std::string(out.get()) : name;
}

}  // namespace

std::optional<ElfImage> ElfImage::load(const std::string& path, std::string* error) {
  const auto fail = [&](const std::string& why) -> std::optional<ElfImage> {
    *error = path + ": " + why;
    return std::nullopt;
  };
  // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused).
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return fail(std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) return fail(std::strerror(errno));
  if (!S_ISREG(st.st_mode)) return fail(file_type(st.st_mode));
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (size > kMaxFileSize)
    return fail("larger than pkeyctl's limit of 1 GiB (" + std::to_string(size) + " bytes)");
  ElfImage img;
  img.bytes_.resize(size);
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = ::read(fd, img.bytes_.data() + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(std::strerror(errno));
    if (n == 0) return fail("the file shrank while being read");
    done += static_cast<std::size_t>(n);
  }
  if (std::string why = img.parse(); !why.empty()) return fail(why);
  return img;
}

std::string ElfImage::parse() {
  const auto& b = bytes_;
  const std::uint64_t size = b.size();
  Elf64_Ehdr eh;
  if (size < SELFMAG || std::memcmp(b.data(), ELFMAG, SELFMAG) != 0) return "not an ELF file";
  if (!read_at(b, 0, &eh)) return "not a whole ELF file: the ELF header is cut short (" + std::to_string(size) + " bytes)";
  if (eh.e_ident[EI_CLASS] != ELFCLASS64) return "not a 64-bit ELF file (pkeyctl scans x86-64 code)";
  if (eh.e_ident[EI_DATA] != ELFDATA2LSB || eh.e_machine != EM_X86_64)
    return "not an x86-64 ELF file (machine " + std::to_string(eh.e_machine) + ")";
  const std::string cut = "not a whole ELF file (truncated or corrupt): ";
  const std::string file_size = " beyond the end of the file (" + std::to_string(size) + " bytes)";

  // Program headers: every segment's file bytes are in the file.
  if (eh.e_phnum != 0) {
    if (eh.e_phentsize != sizeof(Elf64_Phdr)) return cut + "program header size " + std::to_string(eh.e_phentsize);
    if (!inside(eh.e_phoff, std::uint64_t{eh.e_phnum} * sizeof(Elf64_Phdr), size))
      return cut + "the program headers (at " + hex(eh.e_phoff) + ") end" + file_size;
    for (unsigned i = 0; i < eh.e_phnum; ++i) {
      Elf64_Phdr ph{};
      read_at(b, eh.e_phoff + std::uint64_t{i} * sizeof ph, &ph);
      if (ph.p_type == PT_NULL) continue;
      if (!inside(ph.p_offset, ph.p_filesz, size))
        return cut + "segment " + std::to_string(i) + " (file offset " + hex(ph.p_offset) + ", " +
               std::to_string(ph.p_filesz) + " bytes) ends" + file_size;
      if (ph.p_type == PT_LOAD) segments_.push_back({ph.p_vaddr, ph.p_offset, ph.p_filesz, ph.p_flags});
    }
  }

  // Section headers, with the extended numbering for more than 0xff00.
  std::vector<Elf64_Shdr> sh;
  std::uint64_t shstrndx = eh.e_shstrndx;
  if (eh.e_shoff != 0) {
    if (eh.e_shentsize != sizeof(Elf64_Shdr)) return cut + "section header size " + std::to_string(eh.e_shentsize);
    Elf64_Shdr first;
    if (!read_at(b, eh.e_shoff, &first)) return cut + "the section headers (at " + hex(eh.e_shoff) + ") start" + file_size;
    const std::uint64_t count = eh.e_shnum != 0 ? eh.e_shnum : first.sh_size;
    if (shstrndx == SHN_XINDEX) shstrndx = first.sh_link;
    if (count > (size - eh.e_shoff) / sizeof(Elf64_Shdr))
      return cut + "the section headers (at " + hex(eh.e_shoff) + ", " + std::to_string(count) + " of them) end" +
             file_size;
    sh.resize(count);
    for (std::uint64_t i = 0; i < count; ++i) read_at(b, eh.e_shoff + i * sizeof(Elf64_Shdr), &sh[i]);
    if (shstrndx != SHN_UNDEF && shstrndx >= count)
      return cut + "the section name table is section " + std::to_string(shstrndx) + " of " + std::to_string(count);
  }
  for (std::size_t i = 0; i < sh.size(); ++i)
    if (sh[i].sh_type != SHT_NULL && sh[i].sh_type != SHT_NOBITS && !inside(sh[i].sh_offset, sh[i].sh_size, size))
      return cut + "section " + std::to_string(i) + " (file offset " + hex(sh[i].sh_offset) + ", " +
             std::to_string(sh[i].sh_size) + " bytes) ends" + file_size;
  // Every section's bytes are in the file from here on.
  const auto name_of = [&](const Elf64_Shdr& s) {
    return shstrndx != SHN_UNDEF ? string_at(b, sh[shstrndx], s.sh_name) : std::string();
  };

  for (const Elf64_Shdr& s : sh) {
    const std::string name = name_of(s);
    if ((s.sh_flags & SHF_EXECINSTR) && s.sh_type == SHT_PROGBITS)
      exec_sections_.push_back({name, s.sh_addr, s.sh_offset, s.sh_size});
    if (name == "pkeys_wrpkru_sites" && s.sh_type != SHT_NOBITS) {
      for (std::uint64_t o = 0; o + 4 <= s.sh_size; o += 4) {
        std::int32_t rel = 0;
        read_at(b, s.sh_offset + o, &rel);
        wrpkru_sites_.push_back(s.sh_addr + o + static_cast<std::int64_t>(rel));
      }
    }
    if ((s.sh_type == SHT_SYMTAB || s.sh_type == SHT_DYNSYM) && s.sh_link < sh.size()) {
      const Elf64_Shdr& strtab = sh[s.sh_link];
      for (std::uint64_t o = 0; o + sizeof(Elf64_Sym) <= s.sh_size; o += sizeof(Elf64_Sym)) {
        Elf64_Sym sym{};
        read_at(b, s.sh_offset + o, &sym);
        if (ELF64_ST_TYPE(sym.st_info) != STT_FUNC || sym.st_value == 0) continue;
        std::string sym_name = string_at(b, strtab, sym.st_name);
        if (!sym_name.empty()) symbols_.push_back({sym.st_value, sym.st_size, std::move(sym_name)});
      }
    }
  }
  // Without section headers (stripped by sstrip and the like) the
  // executable segments are what runs: scan those rather than nothing.
  if (sh.empty())
    for (std::size_t i = 0; i < segments_.size(); ++i)
      if (segments_[i].flags & PF_X)
        exec_sections_.push_back({"[segment " + std::to_string(i) + "]", segments_[i].vaddr, segments_[i].offset,
                                  segments_[i].filesz});
  std::sort(symbols_.begin(), symbols_.end(), [](const Symbol& x, const Symbol& y) { return x.addr < y.addr; });
  std::sort(wrpkru_sites_.begin(), wrpkru_sites_.end());
  return {};
}

std::string ElfImage::symbol_at(std::uint64_t vaddr) const {
  auto it = std::upper_bound(symbols_.begin(), symbols_.end(), vaddr,
                             [](std::uint64_t a, const Symbol& s) { return a < s.addr; });
  while (it != symbols_.begin()) {
    --it;
    if (vaddr < it->addr + std::max<std::uint64_t>(it->size, 1)) {
      char off[32];
      std::snprintf(off, sizeof off, "+0x%llx", static_cast<unsigned long long>(vaddr - it->addr));
      return demangle(it->name) + off;
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
