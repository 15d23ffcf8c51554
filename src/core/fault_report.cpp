// SPDX-License-Identifier: MIT
#include "core/fault_report.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include "pkeys/pkeys.h"

namespace pkeys::core {
namespace {

// A fixed buffer that line text is appended to.
class Line {
 public:
  Line& str(const char* s) {
    while (*s && len_ < sizeof buf_) buf_[len_++] = *s++;
    return *this;
  }
  Line& hex(std::uintptr_t v) {
    char tmp[19] = "0x";
    for (int i = 0; i < 16; ++i) tmp[2 + i] = "0123456789abcdef"[(v >> (60 - 4 * i)) & 0xf];
    tmp[18] = 0;
    return str(tmp);
  }
  Line& dec(std::uint64_t v) {
    char tmp[21];
    int i = 20;
    tmp[i] = 0;
    do tmp[--i] = static_cast<char>('0' + v % 10);
    while ((v /= 10) != 0);
    return str(tmp + i);
  }
  void emit(int fd) {
    str("\n");
    std::size_t off = 0;
    while (off < len_) {
      const ssize_t n = ::write(fd, buf_ + off, len_ - off);
      if (n <= 0) break;
      off += static_cast<std::size_t>(n);
    }
    len_ = 0;
  }

 private:
  char buf_[256];
  std::size_t len_ = 0;
};

const char* access_name(int access) {
  switch (access) {
    case 0: return "read";
    case 1: return "write";
    case 2: return "execute";
    default: return "unknown";
  }
}

const char* rights_name(unsigned rights) {
  if (rights & PKEY_DISABLE_ACCESS) return "no-access (PKEY_DISABLE_ACCESS)";
  if (rights & PKEY_DISABLE_WRITE) return "read-only (PKEY_DISABLE_WRITE)";
  return "read-write";
}

}  // namespace

void write_fault_report(int fd, const FaultReport& r) noexcept {
  Line line;
  line.str("pkeys: SIGSEGV: protection key ").dec(static_cast<unsigned>(r.key))
      .str(" denied a ").str(access_name(r.access)).str(" access").emit(fd);
  line.str("pkeys:   address ").hex(r.address).emit(fd);
  line.str("pkeys:   access  ").str(access_name(r.access)).emit(fd);
  line.str("pkeys:   key     ").dec(static_cast<unsigned>(r.key));
  if (r.label[0]) line.str(" \"").str(r.label).str("\"");
  line.emit(fd);
  line.str("pkeys:   rights  ").str(rights_name(r.rights)).emit(fd);
  if (r.have_range) {
    line.str("pkeys:   range   ").hex(r.range_start).str("-").hex(r.range_end).str(" (")
        .dec(r.range_end - r.range_start).str(" bytes, ")
        .str(r.range_prot & PROT_READ ? "r" : "-").str(r.range_prot & PROT_WRITE ? "w" : "-")
        .str(r.range_prot & PROT_EXEC ? "x" : "-").str(")").emit(fd);
  } else {
    line.str("pkeys:   range   unknown (tagged outside pkeys)").emit(fd);
  }
  line.str("pkeys:   backend ").str(r.backend).emit(fd);
}

}  // namespace pkeys::core
