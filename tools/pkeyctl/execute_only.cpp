// SPDX-License-Identifier: MIT
// pkeyctl run --execute-only[=strict|learn]: the program's code, and every
// shared library's, execute-only (--x) on x86 with PKU, without a change
// to the program. The work is done inside the program by libpkeys_xom.so
// (src/xom/xom.c), which pkeyctl preloads; pkeyctl finds it relative to
// itself, checks what can be checked before the program runs (PKU, a
// dynamically linked program), and in learn mode prints what the library
// reports: one line per mapping whose code the program read.
#include "execute_only.hpp"

#include <cpuid.h>
#include <elf.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "elf_image.hpp"

namespace pkeyctl {
namespace {

constexpr int kRefused = 1;
constexpr int kUsage = 2;
constexpr int kFailure = 125;

// Why this machine cannot make memory execute-only, or "" when it can.
std::string missing_pku() {
  const long key = ::syscall(SYS_pkey_alloc, 0UL, 0UL);
  if (key >= 0) {
    ::syscall(SYS_pkey_free, key);
    return "";
  }
  if (errno == ENOSPC) return "";  // every key taken: PKU is there
  const int alloc_errno = errno;
  unsigned a = 0, b = 0, c = 0, d = 0;
  bool pku = false, ospke = false, hypervisor = false;
  if (__get_cpuid_max(0, nullptr) >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    pku = (c >> 3) & 1u;
    ospke = (c >> 4) & 1u;
  }
  if (__get_cpuid(1, &a, &b, &c, &d)) hypervisor = (c >> 31) & 1u;
  if (!pku && hypervisor)
    return "this machine is a virtual machine whose hypervisor does not expose PKU to it (CPUID.7:ECX.PKU is clear)";
  if (!pku) return "this CPU has no PKU (CPUID.7:ECX.PKU is clear)";
  if (!ospke)
    return "the CPU has PKU but the kernel did not turn it on (built without "
           "CONFIG_X86_INTEL_MEMORY_PROTECTION_KEYS, or booted with nopku)";
  return std::string("pkey_alloc fails: ") + std::strerror(alloc_errno);
}

// "yes" when FILE is an ELF program with a program interpreter (dynamically
// linked), "no" when it has none (static), "" when unknown (not ELF, not
// readable: exec says what is wrong). A script is judged by its interpreter.
std::string dynamically_linked(const std::string& file, int depth = 0) {
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  unsigned char head[256] = {};
  const ssize_t n = ::pread(fd, head, sizeof head, 0);
  if (n >= 2 && head[0] == '#' && head[1] == '!') {
    ::close(fd);
    std::size_t at = 2;
    const auto size = static_cast<std::size_t>(n);
    while (at < size && (head[at] == ' ' || head[at] == '\t')) ++at;
    std::size_t end = at;
    while (end < size && head[end] != ' ' && head[end] != '\t' && head[end] != '\n' && head[end] != 0) ++end;
    if (end == at || depth >= 4) return "";
    return dynamically_linked(std::string(reinterpret_cast<const char*>(head) + at, end - at), depth + 1);
  }
  Elf64_Ehdr eh;
  if (n < static_cast<ssize_t>(sizeof eh) || std::memcmp(head, ELFMAG, SELFMAG) != 0 || head[EI_CLASS] != ELFCLASS64 ||
      (std::memcpy(&eh, head, sizeof eh), eh.e_phentsize != sizeof(Elf64_Phdr))) {
    ::close(fd);
    return "";
  }
  std::string answer = "no";
  for (unsigned i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr ph;
    if (::pread(fd, &ph, sizeof ph, static_cast<off_t>(eh.e_phoff + i * sizeof ph)) != static_cast<ssize_t>(sizeof ph)) {
      answer = "";
      break;
    }
    if (ph.p_type == PT_INTERP) answer = "yes";
  }
  ::close(fd);
  return answer;
}

// libpkeys_xom.so beside pkeyctl: in an install prefix (bin/ -> lib/) or
// in the build tree (tools/pkeyctl/ -> src/xom/). The candidates are tried
// in that order; `looked` lists them for the message when none is there.
std::string find_library(std::string* looked) {
  char self[PATH_MAX];
  const ssize_t len = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (len <= 0) return "";
  self[len] = 0;
  std::string dir(self);
  dir.resize(dir.rfind('/') + 1);
  for (const char* relative : {PKEYS_XOM_FROM_INSTALLED_BIN, PKEYS_XOM_FROM_BUILD_TREE}) {
    const std::string candidate = dir + relative;
    char real[PATH_MAX];
    if (::realpath(candidate.c_str(), real) && ::access(real, R_OK) == 0) return real;
    if (!looked->empty()) *looked += ", ";
    *looked += candidate;
  }
  return "";
}

// "OFFSET (function+0xN)" where the object's symbols (.symtab, else
// .dynsym) name the function holding OFFSET, else OFFSET. Offsets are from
// the object's load address: virtual addresses in its file.
std::string with_symbol(const std::string& object, const std::string& offset) {
  static std::map<std::string, std::optional<ElfImage>> images;  // read once each
  auto it = images.find(object);
  if (it == images.end()) {
    std::string error;
    it = images.emplace(object, ElfImage::load(object, &error)).first;
  }
  if (!it->second || offset.rfind("0x", 0) != 0) return offset;
  const std::string symbol = it->second->symbol_at(std::strtoull(offset.c_str(), nullptr, 16));
  return symbol.empty() ? offset : offset + " (" + symbol + ")";
}

// A report line from the library, "xom-learn pid=N object=O offset=X by=W",
// as pkeyctl says it; W is OBJECT+OFFSET, or an address outside
// execute-only code.
void print_report(const std::string& line, std::vector<std::string>* objects) {
  auto field = [&](const char* name) {
    const std::string key = std::string(" ") + name + "=";
    const std::size_t at = line.find(key);
    if (at == std::string::npos) return std::string("?");
    const std::size_t from = at + key.size(), to = line.find(' ', from);
    return line.substr(from, to == std::string::npos ? std::string::npos : to - from);
  };
  if (line.rfind("xom-learn ", 0) != 0) {
    std::fprintf(stderr, "pkeyctl: execute-only: %s\n", line.c_str());
    return;
  }
  const std::string object = field("object");
  std::string by = field("by");
  if (const std::size_t plus = by.rfind('+'); plus != std::string::npos)
    by = by.substr(0, plus + 1) + with_symbol(by.substr(0, plus), by.substr(plus + 1));
  std::fprintf(stderr, "pkeyctl: execute-only (learn): pid %s read the code of %s at offset %s, from %s: made r-x again\n",
               field("pid").c_str(), object.c_str(), with_symbol(object, field("offset")).c_str(), by.c_str());
  bool known = false;
  for (const std::string& o : *objects) known = known || o == object;
  if (!known) objects->push_back(object);
}

// Learn mode's parent: prints the library's lines until PROGRAM exits.
// Descendants that outlive it keep the pipe open: what they wrote by then
// is printed, and pkeyctl does not wait for them.
int supervise_learning(pid_t child, int from) {
  std::string pending;
  std::vector<std::string> objects;
  int status = 0;
  bool exited = false;
  for (;;) {
    pollfd p{from, POLLIN, 0};
    const int ready = ::poll(&p, 1, exited ? 0 : 100);
    bool eof = false;
    if (ready > 0) {
      char buf[4096];
      const ssize_t n = ::read(from, buf, sizeof buf);
      if (n > 0) pending.append(buf, static_cast<std::size_t>(n));
      eof = n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN);
      for (std::size_t nl; (nl = pending.find('\n')) != std::string::npos; pending.erase(0, nl + 1))
        print_report(pending.substr(0, nl), &objects);
    }
    if (!exited && ::waitpid(child, &status, WNOHANG) == child) exited = true;
    if (eof || (exited && ready == 0)) break;
  }
  if (!exited) ::waitpid(child, &status, 0);
  if (objects.empty()) {
    std::fputs("pkeyctl: execute-only (learn): no code was read: the program ran with all of its code "
               "execute-only (it can run under --execute-only=strict)\n", stderr);
  } else {
    std::string list;
    for (const std::string& o : objects) list += (list.empty() ? "" : ", ") + o;
    std::fprintf(stderr, "pkeyctl: execute-only (learn): %zu object(s) read their code and were made readable: %s "
                 "(under --execute-only=strict such a read is a SIGSEGV)\n", objects.size(), list.c_str());
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

bool is_execute_only_option(const char* arg) {
  return std::strcmp(arg, "--execute-only") == 0 || std::strncmp(arg, "--execute-only=", 15) == 0;
}

int execute_only(const char* option, const std::string& file) {
  const char* value = option[14] == '=' ? option + 15 : "learn";
  const bool learn = std::strcmp(value, "learn") == 0;
  if (!learn && std::strcmp(value, "strict") != 0) {
    std::fprintf(stderr, "pkeyctl run: --execute-only=%s: the mode is strict or learn\n", value);
    return kUsage;
  }
  if (!file.empty() && dynamically_linked(file) == "no") {
    std::fprintf(stderr, "pkeyctl run: %s is statically linked: --execute-only works through a preload library, "
                 "which only a dynamically linked program loads\n", file.c_str());
    return kRefused;
  }
  // A broken installation first: it says what to fix on any machine.
  std::string looked;
  const std::string library = find_library(&looked);
  if (library.empty()) {
    std::fprintf(stderr, "pkeyctl run: libpkeys_xom.so is not installed beside pkeyctl (looked for %s)\n",
                 looked.c_str());
    return kFailure;
  }
  if (library.find_first_of(" :") != std::string::npos) {
    std::fprintf(stderr, "pkeyctl run: %s: LD_PRELOAD cannot name a path with a space or a colon\n", library.c_str());
    return kFailure;
  }
  if (const std::string why = missing_pku(); !why.empty()) {
    std::fprintf(stderr, "pkeyctl run: --execute-only needs x86 PKU (protection keys: without them x86 pages "
                 "cannot be executable yet unreadable), and %s\n", why.c_str());
    return kRefused;
  }
  // After any preload the user set: a sanitizer runtime must come first.
  const char* preload = std::getenv("LD_PRELOAD");
  const std::string preloads = preload && *preload ? std::string(preload) + ":" + library : library;
  if (::setenv("LD_PRELOAD", preloads.c_str(), 1) != 0 || ::setenv("PKEYS_XOM_MODE", value, 1) != 0) {
    std::fprintf(stderr, "pkeyctl run: setenv: %s\n", std::strerror(errno));
    return kFailure;
  }
  if (!learn) {
    ::unsetenv("PKEYS_XOM_REPORT_FD");
    return -1;
  }
  int fds[2];
  if (::pipe(fds) != 0 || ::fcntl(fds[0], F_SETFD, FD_CLOEXEC) != 0) {
    std::fprintf(stderr, "pkeyctl run: pipe: %s\n", std::strerror(errno));
    return kFailure;
  }
  const pid_t child = ::fork();
  if (child < 0) {
    std::fprintf(stderr, "pkeyctl run: fork: %s\n", std::strerror(errno));
    return kFailure;
  }
  if (child == 0) {
    ::close(fds[0]);
    // The write end stays open across exec, in the program and whatever it
    // forks and execs: all of them report.
    ::setenv("PKEYS_XOM_REPORT_FD", std::to_string(fds[1]).c_str(), 1);
    return -1;
  }
  ::close(fds[1]);
  const int status = supervise_learning(child, fds[0]);
  ::close(fds[0]);
  return status;
}

}  // namespace pkeyctl
