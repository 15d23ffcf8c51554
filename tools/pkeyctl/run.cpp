// SPDX-License-Identifier: MIT
// pkeyctl run: W^X for unmodified programs.
//
// --deny-wx installs a seccomp filter before exec that fails mmap, mmap2,
// mprotect and pkey_mprotect asking for PROT_WRITE and PROT_EXEC together,
// shmat with SHM_EXEC, and personality() turning READ_IMPLIES_EXEC on (the
// kernel would then add PROT_EXEC to every PROT_READ), with EACCES, as
// systemd's MemoryDenyWriteExecute does; the filter covers the x86-64, i386
// and x32 system call tables, so raw system calls cannot get around it.
// i386's old_mmap takes its arguments in memory, where a filter cannot
// look, so it is refused whatever it asks (i386 libcs use mmap2).
// What is decided at exec no filter can refuse: pkeyctl clears a
// READ_IMPLIES_EXEC it inherited, and refuses a program the kernel would
// start with an executable stack or with READ_IMPLIES_EXEC (an i386 ELF
// without PT_GNU_STACK). Where the kernel has it (Linux 6.3+) pkeyctl also
// turns on memory-deny-write-execute (PR_SET_MDWE; inherited, irrevocable),
// which also refuses making memory executable that was not.
// --log-wx lets the program run and reports each such call: the filter
// hands it to pkeyctl (SECCOMP_RET_USER_NOTIF), which prints it and lets
// the kernel carry it out (SECCOMP_USER_NOTIF_FLAG_CONTINUE). Once no
// supervisor holds the notification descriptor, every such call fails with
// ENOSYS, so pkeyctl must outlive every process that uses the filter: it
// serves until the kernel reports that none is left (the program's
// daemonised grandchildren included: pkeyctl is their subreaper, and reaps
// them, as a zombie still holds the filter), passes the signals that would
// end it on to the program, and ignores SIGPIPE (a report that cannot be
// written is lost, never a call).
#include <elf.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/shm.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "commands.hpp"
#include "execute_only.hpp"

namespace pkeyctl {
namespace {

constexpr int kFailure = 125;  // pkeyctl itself failed (as env(1), timeout(1))
constexpr int kCannotRun = 126;

// Linux 6.3's memory-deny-write-execute, for older headers.
#ifndef PR_SET_MDWE
#define PR_SET_MDWE 65
#endif
#ifndef PR_MDWE_REFUSE_EXEC_GAIN
#define PR_MDWE_REFUSE_EXEC_GAIN 1
#endif

struct RunOptions {
  enum class Mode { none, deny_wx, log_wx } mode = Mode::none;
  bool verbose = false;
  const char* log_path = nullptr;  // --log FILE: --log-wx's reports there, not on stderr
};

struct Rule {
  const char* name;
  unsigned arg;  // the argument compared
  scmp_datum_t mask, value;  // mask 0: the call whatever its arguments
};

// Adds `rules` to `ctx`, each with `action`, for every architecture in it
// (libseccomp translates the names per architecture).
bool add_rules(scmp_filter_ctx ctx, std::uint32_t action, const std::vector<Rule>& rules, std::string* error) {
  for (const Rule& rule : rules) {
    const int nr = seccomp_syscall_resolve_name(rule.name);
    if (nr == __NR_SCMP_ERROR) continue;
    // Spelt out: SCMP_A2() is a C compound literal, not ISO C++.
    scmp_arg_cmp cmp{};
    cmp.arg = rule.arg;
    cmp.op = SCMP_CMP_MASKED_EQ;
    cmp.datum_a = rule.mask;
    cmp.datum_b = rule.value;
    const int r =
        rule.mask == 0 ? seccomp_rule_add(ctx, action, nr, 0) : seccomp_rule_add_array(ctx, action, nr, 1, &cmp);
    if (r != 0) {
      *error = std::string("seccomp_rule_add(") + rule.name + "): " + std::strerror(-r);
      return false;
    }
  }
  return true;
}

// The rules of every table. The protection (or shmat's flags) is the third
// argument everywhere. personality() turning READ_IMPLIES_EXEC on, but not
// the query personality(0xffffffff): libseccomp takes one comparison per
// argument, so "READ_IMPLIES_EXEC set and not all 32 bits set" is one rule
// per other bit, "READ_IMPLIES_EXEC set and this bit clear". Only the low
// 32 bits count, as for the kernel (an unsigned int).
std::vector<Rule> shared_rules() {
  const scmp_datum_t wx = PROT_WRITE | PROT_EXEC;
  std::vector<Rule> rules = {{"mmap2", 2, wx, wx},
                             {"mprotect", 2, wx, wx},
                             {"pkey_mprotect", 2, wx, wx},
                             {"shmat", 2, SHM_EXEC, SHM_EXEC}};
  for (unsigned bit = 0; bit < 32; ++bit) {
    if ((1u << bit) == READ_IMPLIES_EXEC) continue;
    rules.push_back({"personality", 0, READ_IMPLIES_EXEC | (scmp_datum_t{1} << bit), READ_IMPLIES_EXEC});
  }
  return rules;
}

// Builds the filter; `action` for the offending calls. i386 has a filter
// of its own, merged in: its "mmap" is old_mmap, and its shmat also comes
// through ipc().
scmp_filter_ctx build_filter(std::uint32_t action, std::string* error) {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  scmp_filter_ctx i386 = seccomp_init(SCMP_ACT_ALLOW);
  auto fail = [&](const std::string& why) -> scmp_filter_ctx {
    if (error->empty()) *error = why;
    if (ctx) seccomp_release(ctx);
    if (i386) seccomp_release(i386);
    return nullptr;
  };
  if (!ctx || !i386) return fail("seccomp_init failed");
  int r = seccomp_arch_add(ctx, SCMP_ARCH_X32);
  if (r != 0 && r != -EEXIST) return fail(std::string("seccomp_arch_add: ") + std::strerror(-r));
  if ((r = seccomp_arch_remove(i386, SCMP_ARCH_NATIVE)) != 0 || (r = seccomp_arch_add(i386, SCMP_ARCH_X86)) != 0)
    return fail(std::string("seccomp_arch_add(x86): ") + std::strerror(-r));
  const scmp_datum_t wx = PROT_WRITE | PROT_EXEC;
  std::vector<Rule> rules = shared_rules();
  std::vector<Rule> i386_rules = rules;
  rules.push_back({"mmap", 2, wx, wx});
  // old_mmap (i386's "mmap", number 90) reads its arguments from memory,
  // where a filter cannot look: refused whatever it asks.
  i386_rules.push_back({"mmap", 0, 0, 0});
  if (!add_rules(ctx, action, rules, error) || !add_rules(i386, action, i386_rules, error)) return fail("");
  // libseccomp adds ipc(SHMAT, id, flags, ...) for shmat with the call
  // exactly SHMAT (21), but the kernel ignores the version in the top 16
  // bits of the call: match on the low 16 alone as well.
  scmp_arg_cmp cmp[2]{};
  cmp[0].arg = 0;
  cmp[0].op = SCMP_CMP_MASKED_EQ;
  cmp[0].datum_a = 0xffff;
  cmp[0].datum_b = 21;  // SHMAT
  cmp[1].arg = 2;
  cmp[1].op = SCMP_CMP_MASKED_EQ;
  cmp[1].datum_a = SHM_EXEC;
  cmp[1].datum_b = SHM_EXEC;
  const int ipc = seccomp_syscall_resolve_name_arch(SCMP_ARCH_X86, "ipc");
  if (ipc != __NR_SCMP_ERROR && (r = seccomp_rule_add_exact_array(i386, action, ipc, 2, cmp)) != 0)
    return fail(std::string("seccomp_rule_add(ipc): ") + std::strerror(-r));
  if ((r = seccomp_merge(ctx, i386)) != 0) return fail(std::string("seccomp_merge: ") + std::strerror(-r));
  return ctx;  // i386 is part of it now
}

// Why the kernel would start `path` with memory writable and executable,
// or "" when it would not, or when `path` is no ELF file (exec then says
// what is wrong). A script is judged by its interpreter, which the kernel
// runs (up to 4 levels, as the kernel).
std::string exec_hazard(const std::string& path, int depth = 0) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT || errno == ENOTDIR) return "";  // exec reports it
    return std::string("cannot be read to check it: ") + std::strerror(errno);
  }
  unsigned char head[256] = {};  // as much as the kernel reads (BINPRM_BUF_SIZE)
  const ssize_t n = ::pread(fd, head, sizeof head, 0);
  if (n >= 2 && head[0] == '#' && head[1] == '!') {
    ::close(fd);
    auto at = static_cast<std::size_t>(2);
    const auto size = static_cast<std::size_t>(n);
    while (at < size && (head[at] == ' ' || head[at] == '\t')) ++at;
    std::size_t end = at;
    while (end < size && head[end] != ' ' && head[end] != '\t' && head[end] != '\n' && head[end] != 0) ++end;
    const std::string interpreter(reinterpret_cast<const char*>(head) + at, end - at);
    if (interpreter.empty() || depth >= 4) return "";
    const std::string why = exec_hazard(interpreter, depth + 1);
    return why.empty() ? "" : "its interpreter " + interpreter + ": " + why;
  }
  const bool is64 = n >= EI_NIDENT && head[EI_CLASS] == ELFCLASS64;
  std::uint64_t phoff = 0;
  unsigned phentsize = 0, phnum = 0, machine = 0;
  if (n < EI_NIDENT || std::memcmp(head, ELFMAG, SELFMAG) != 0) {
    ::close(fd);
    return "";
  }
  if (is64 && static_cast<std::size_t>(n) >= sizeof(Elf64_Ehdr)) {
    Elf64_Ehdr eh;
    std::memcpy(&eh, head, sizeof eh);
    phoff = eh.e_phoff, phentsize = eh.e_phentsize, phnum = eh.e_phnum, machine = eh.e_machine;
  } else if (!is64 && static_cast<std::size_t>(n) >= sizeof(Elf32_Ehdr)) {
    Elf32_Ehdr eh;
    std::memcpy(&eh, head, sizeof eh);
    phoff = eh.e_phoff, phentsize = eh.e_phentsize, phnum = eh.e_phnum, machine = eh.e_machine;
  }
  const unsigned size = is64 ? sizeof(Elf64_Phdr) : sizeof(Elf32_Phdr);
  bool whole = phentsize == size && phnum > 0, gnu_stack = false, exec_stack = false;
  for (unsigned i = 0; whole && i < phnum; ++i) {
    unsigned char raw[sizeof(Elf64_Phdr)];
    if (::pread(fd, raw, size, static_cast<off_t>(phoff + std::uint64_t{i} * size)) != static_cast<ssize_t>(size)) {
      whole = false;
      break;
    }
    std::uint32_t type, flags;
    if (is64) {
      Elf64_Phdr ph;
      std::memcpy(&ph, raw, sizeof ph);
      type = ph.p_type, flags = ph.p_flags;
    } else {
      Elf32_Phdr ph;
      std::memcpy(&ph, raw, sizeof ph);
      type = ph.p_type, flags = ph.p_flags;
    }
    if (type == PT_GNU_STACK) {
      gnu_stack = true;
      exec_stack = (flags & PF_X) != 0;
    }
  }
  ::close(fd);
  if (!whole) return "";  // the kernel refuses it (ENOEXEC)
  if (exec_stack) return "it asks for an executable stack (PT_GNU_STACK with PF_X)";
  // The kernel sets READ_IMPLIES_EXEC for an i386 program without one.
  if (!is64 && machine == EM_386 && !gnu_stack)
    return "the kernel would run it with READ_IMPLIES_EXEC (an i386 program without PT_GNU_STACK)";
  return "";
}

// The file execvp would run for `name`, or "" when there is none (execvp
// then says why).
std::string find_program(const char* name) {
  if (std::strchr(name, '/')) return name;
  const char* path = std::getenv("PATH");
  const std::string dirs = path ? path : "/bin:/usr/bin";  // glibc's default
  for (std::size_t at = 0;;) {
    const std::size_t colon = dirs.find(':', at);
    const std::string dir = dirs.substr(at, colon == std::string::npos ? std::string::npos : colon - at);
    const std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    struct stat st;
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(candidate.c_str(), X_OK) == 0)
      return candidate;
    if (colon == std::string::npos) return "";
    at = colon + 1;
  }
}

// A child's wait status as a shell reports it: its exit status, or 128 + N
// when signal N killed it.
int exit_status(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status); }

// 127 when PROGRAM is not found, 126 when it is but cannot run (as a shell).
[[noreturn]] void exec_program(char** argv) {
  ::execvp(argv[0], argv);
  std::fprintf(stderr, "pkeyctl run: %s: %s\n", argv[0], std::strerror(errno));
  ::_exit(errno == ENOENT ? 127 : 126);
}

int deny(char** program, const RunOptions& opt) {
  const std::string file = find_program(program[0]);
  if (const std::string why = file.empty() ? "" : exec_hazard(file); !why.empty()) {
    std::fprintf(stderr, "pkeyctl run: %s: %s: refused under --deny-wx\n", file.c_str(), why.c_str());
    return kCannotRun;
  }
  // A READ_IMPLIES_EXEC pkeyctl inherited (setarch -X) would pass to PROGRAM.
  const int persona = ::personality(0xffffffff);
  if (persona != -1 && (static_cast<unsigned>(persona) & READ_IMPLIES_EXEC) != 0 &&
      ::personality(static_cast<unsigned>(persona) & ~static_cast<unsigned>(READ_IMPLIES_EXEC)) == -1) {
    std::fprintf(stderr, "pkeyctl run: cannot clear READ_IMPLIES_EXEC: %s\n", std::strerror(errno));
    return kFailure;
  }
  // Best effort: kernels before 6.3 have no MDWE (EINVAL), and the filter
  // stands alone there.
  std::string mdwe = "yes";
  if (::prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0L, 0L, 0L) != 0)
    mdwe = errno == EINVAL ? "no (this kernel has no PR_SET_MDWE; Linux 6.3 and later have it)"
                           : std::string("no (PR_SET_MDWE: ") + std::strerror(errno) + ")";
  std::string error;
  scmp_filter_ctx ctx = build_filter(SCMP_ACT_ERRNO(EACCES), &error);
  if (!ctx) {
    std::fprintf(stderr, "pkeyctl run: %s\n", error.c_str());
    return kFailure;
  }
  const int r = seccomp_load(ctx);
  seccomp_release(ctx);
  if (r != 0) {
    std::fprintf(stderr, "pkeyctl run: seccomp_load: %s\n", std::strerror(-r));
    return kFailure;
  }
  if (opt.verbose)
    std::fprintf(stderr, "pkeyctl run: W^X denied by: seccomp filter (x86-64, i386, x32); MDWE: %s\n", mdwe.c_str());
  exec_program(program);
}

// One byte carrying one file descriptor over a Unix socket (SCM_RIGHTS).
struct FdMessage {
  char data = 0;
  iovec iov{&data, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  FdMessage() {
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
  }
  FdMessage(const FdMessage&) = delete;
  FdMessage& operator=(const FdMessage&) = delete;
};

bool send_fd(int sock, int fd) {
  FdMessage m;
  cmsghdr* c = CMSG_FIRSTHDR(&m.msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  return ::sendmsg(sock, &m.msg, 0) == 1;
}

int receive_fd(int sock) {
  FdMessage m;
  if (::recvmsg(sock, &m.msg, 0) != 1) return -1;
  cmsghdr* c = CMSG_FIRSTHDR(&m.msg);
  if (!c || c->cmsg_type != SCM_RIGHTS) return -1;
  int fd;
  std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
  return fd;
}

// Appends, rather than `"|" + std::string(name)`: GCC 12 at -O2 reports a
// false -Wrestrict overlap in that operator+ (GCC bug 105329).
std::string prot_string(unsigned long long prot) {
  std::string s;
  for (auto [bit, name] : {std::pair{PROT_READ, "PROT_READ"}, {PROT_WRITE, "PROT_WRITE"}, {PROT_EXEC, "PROT_EXEC"}}) {
    if (!(prot & static_cast<unsigned>(bit))) continue;
    if (!s.empty()) s += '|';
    s += name;
  }
  return s.empty() ? "PROT_NONE" : s;
}

// printf into a std::string.
[[gnu::format(printf, 1, 2)]] std::string format(const char* fmt, ...) {
  va_list ap, again;
  va_start(ap, fmt);
  va_copy(again, ap);
  const int n = std::vsnprintf(nullptr, 0, fmt, ap);
  std::string s(n > 0 ? static_cast<std::size_t>(n) : 0, '\0');
  if (n > 0) std::vsnprintf(s.data(), s.size() + 1, fmt, again);
  va_end(again);
  va_end(ap);
  return s;
}

// Where --log-wx's reports go: stderr, or the file --log names. A line that
// cannot be written (stderr a closed pipe, a full disk) is lost, never a
// call of the program: pkeyctl ignores SIGPIPE and serves on.
class Log {
 public:
  explicit Log(int fd) : fd_(fd) {}
  void write(const std::string& line) {
    for (std::size_t at = 0; at < line.size();) {
      const ssize_t n = ::write(fd_, line.data() + at, line.size() - at);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        lost(n < 0 ? errno : EIO);
        return;
      }
      at += static_cast<std::size_t>(n);
    }
  }

 private:
  void lost(int why) {
    if (said_ || fd_ == STDERR_FILENO) return;  // stderr: nowhere else to say it
    said_ = true;
    std::fprintf(stderr, "pkeyctl run: cannot write the log: %s (reports are lost; the program runs on)\n",
                 std::strerror(why));
  }
  int fd_;
  bool said_ = false;
};

// The report of one offending call, or "" for none. old_mmap's arguments
// are read from the caller's memory (while it waits); one that asks for no
// W+X passes without a word.
std::string report(const seccomp_notif& req) {
  char* name = seccomp_syscall_resolve_num_arch(req.data.arch, req.data.nr);
  const std::string call = name ? name : "?";
  std::free(name);
  const auto* a = req.data.args;
  if (req.data.arch == SCMP_ARCH_X86 && call == "mmap") {
    std::uint32_t args[6];  // addr, len, prot, flags, fd, offset
    iovec local{args, sizeof args};
    iovec remote{reinterpret_cast<void*>(static_cast<std::uintptr_t>(a[0])), sizeof args};
    if (::process_vm_readv(req.pid, &local, 1, &remote, 1, 0) != static_cast<ssize_t>(sizeof args))
      return format("pkeyctl: W^X: pid %d: old_mmap(arguments at 0x%llx unreadable)\n", req.pid,
                    static_cast<unsigned long long>(a[0]));
    if ((args[2] & (PROT_WRITE | PROT_EXEC)) != (PROT_WRITE | PROT_EXEC)) return "";
    return format("pkeyctl: W^X: pid %d: old_mmap(0x%x, %u, %s)\n", req.pid, args[0], args[1],
                  prot_string(args[2]).c_str());
  }
  if (call == "personality")
    return format("pkeyctl: W^X: pid %d: personality(0x%llx: READ_IMPLIES_EXEC)\n", req.pid,
                  static_cast<unsigned long long>(a[0] & 0xffffffffu));
  const bool flags = call == "shmat" || call == "ipc";
  return format("pkeyctl: W^X: pid %d: %s(0x%llx, %llu, %s)\n", req.pid, call.c_str(),
                static_cast<unsigned long long>(a[0]), static_cast<unsigned long long>(a[1]),
                flags ? "SHM_EXEC" : prot_string(a[2]).c_str());
}

// Takes one notification, lets the call proceed, then logs it (the caller
// need not wait for the log). False when no memory could be had for it.
bool serve_one(int notify_fd, Log& log) {
  // The kernel wants a zeroed request each time, of its own size.
  seccomp_notif* req = nullptr;
  seccomp_notif_resp* resp = nullptr;
  if (seccomp_notify_alloc(&req, &resp) != 0) return false;
  if (seccomp_notify_receive(notify_fd, req) == 0) {  // ENOENT: the caller is gone
    const std::string line = report(*req);
    resp->id = req->id;
    resp->error = 0;
    resp->val = 0;
    resp->flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
    seccomp_notify_respond(notify_fd, resp);  // ENOENT: the caller is gone
    if (!line.empty()) log.write(line);
  }
  seccomp_notify_free(req, resp);
  return true;
}

// The signals that would end pkeyctl, and with it the program's
// supervision: passed on to the program instead.
constexpr int kForwardedSignals[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};

// Whether the kernel reports (POLLHUP on the notification descriptor) that
// no process uses the filter any more: Linux 5.8 and later.
bool kernel_reports_unused_filter() {
  utsname u;
  int major = 0, minor = 0;
  if (::uname(&u) != 0 || std::sscanf(u.release, "%d.%d", &major, &minor) != 2) return false;
  return major > 5 || (major == 5 && minor >= 8);
}

// Passes a signal pkeyctl received on: to the child while it lives, then to
// the processes pkeyctl adopted (a daemon's children, supervised too). Not
// one the kernel sent to a whole process group (the terminal's ^C or
// hangup) that the process is in: it has it already. Only pkeyctl reaps
// its children, in this thread: a pid signalled here is no reused one.
void forward(const signalfd_siginfo& si, pid_t child, bool child_alive) {
  const auto pass = [&](pid_t pid) {
    if (si.ssi_code == SI_KERNEL && ::getpgid(pid) == ::getpgrp()) return;
    ::kill(pid, static_cast<int>(si.ssi_signo));
  };
  if (child_alive) {
    pass(child);
    return;
  }
  const std::string children = "/proc/self/task/" + std::to_string(::getpid()) + "/children";
  std::FILE* f = std::fopen(children.c_str(), "re");
  if (!f) return;
  for (int pid; std::fscanf(f, "%d", &pid) == 1;) pass(pid);
  std::fclose(f);
}

// Serves the filter's notifications until no process uses the filter any
// more, reaping pkeyctl's children (a zombie holds the filter) and
// forwarding signals as it goes. The child's wait status as a shell
// reports it.
int supervise(pid_t child, int notify_fd, int signal_fd, Log& log) {
  const bool hup_reported = kernel_reports_unused_filter();
  bool child_alive = true;
  int child_status = 0;
  for (;;) {
    pid_t reaped;
    int status = 0;
    while ((reaped = ::waitpid(-1, &status, WNOHANG)) > 0) {
      if (reaped != child) continue;
      child_alive = false;
      child_status = status;
    }
    // No child left: as their subreaper, pkeyctl has no descendant either.
    // Where the kernel reports an unused filter, that report decides (a
    // process cloned with CLONE_PARENT is no child of pkeyctl's).
    if (reaped < 0 && errno == ECHILD && !hup_reported) break;
    pollfd p[2] = {{notify_fd, POLLIN, 0}, {signal_fd, POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      std::fprintf(stderr, "pkeyctl run: poll: %s: supervision ends\n", std::strerror(errno));
      break;
    }
    if (p[0].revents & POLLIN) {
      if (!serve_one(notify_fd, log)) {
        std::fputs("pkeyctl run: seccomp_notify_alloc failed: supervision ends\n", stderr);
        break;
      }
    } else if (p[0].revents & (POLLHUP | POLLERR)) {
      break;  // no process uses the filter: all supervised processes are gone
    }
    signalfd_siginfo si;
    while (::read(signal_fd, &si, sizeof si) == static_cast<ssize_t>(sizeof si))
      if (si.ssi_signo != SIGCHLD) forward(si, child, child_alive);
  }
  if (child_alive) ::waitpid(child, &child_status, 0);
  return exit_status(child_status);
}

int log_only(char** program, const RunOptions& opt) {
  int log_fd = STDERR_FILENO;
  if (opt.log_path) {
    // Appended to, as a log; the program does not inherit it.
    log_fd = ::open(opt.log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
    if (log_fd < 0) {
      std::fprintf(stderr, "pkeyctl run: --log %s: %s\n", opt.log_path, std::strerror(errno));
      return kFailure;
    }
  }
  Log log(log_fd);
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    std::fprintf(stderr, "pkeyctl run: socketpair: %s\n", std::strerror(errno));
    return kFailure;
  }
  // From before the fork, the signals pkeyctl forwards (and SIGCHLD) wait
  // for the supervisor's loop: none can end pkeyctl in between.
  sigset_t handled, old_mask;
  sigemptyset(&handled);
  for (int sig : kForwardedSignals) sigaddset(&handled, sig);
  sigaddset(&handled, SIGCHLD);
  ::sigprocmask(SIG_BLOCK, &handled, &old_mask);
  const int signal_fd = ::signalfd(-1, &handled, SFD_CLOEXEC | SFD_NONBLOCK);
  if (signal_fd < 0) {
    std::fprintf(stderr, "pkeyctl run: signalfd: %s\n", std::strerror(errno));
    return kFailure;
  }
  // Orphaned descendants become pkeyctl's children, to reap and signal.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1L, 0L, 0L, 0L);
  const pid_t child = ::fork();
  if (child < 0) {
    std::fprintf(stderr, "pkeyctl run: fork: %s\n", std::strerror(errno));
    return kFailure;
  }
  if (child == 0) {
    ::sigprocmask(SIG_SETMASK, &old_mask, nullptr);
    ::close(sv[0]);
    std::string error;
    scmp_filter_ctx ctx = build_filter(SCMP_ACT_NOTIFY, &error);
    int r = ctx ? seccomp_load(ctx) : -EINVAL;
    const int fd = r == 0 ? seccomp_notify_fd(ctx) : -1;
    if (ctx) seccomp_release(ctx);
    if (r != 0 || fd < 0 || !send_fd(sv[1], fd)) {
      std::fprintf(stderr, "pkeyctl run: cannot install the logging filter: %s\n",
                   error.empty() ? std::strerror(r < 0 ? -r : errno) : error.c_str());
      ::_exit(kFailure);
    }
    ::close(fd);
    ::close(sv[1]);
    exec_program(program);
  }
  // A report to a closed pipe must not end the supervision (after the
  // fork: the program keeps the disposition pkeyctl was given).
  ::signal(SIGPIPE, SIG_IGN);
  ::close(sv[1]);
  const int fd = receive_fd(sv[0]);
  ::close(sv[0]);
  if (fd < 0) {  // the child said why, and exits 125
    int status = 0;
    ::waitpid(child, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : kFailure;
  }
  if (opt.verbose) std::fputs("pkeyctl run: W^X logged by: seccomp user notification (x86-64, i386, x32)\n", stderr);
  const int r = supervise(child, fd, signal_fd, log);
  ::close(fd);
  return r;
}

}  // namespace

int run(int argc, char** argv) {
  static const char kUsage[] =
      "usage: pkeyctl run [--deny-wx|--log-wx [--log FILE]] [--execute-only[=strict|learn]] [--verbose] -- PROGRAM [ARGS...]\n";
  using Mode = RunOptions::Mode;
  RunOptions opt;
  int i = 1;
  const char* execute_only = nullptr;  // --execute-only[=MODE]: execute_only.cpp
  for (; i < argc && std::strcmp(argv[i], "--") != 0; ++i) {
    if (std::strcmp(argv[i], "--verbose") == 0) {
      opt.verbose = true;
    } else if (std::strcmp(argv[i], "--deny-wx") == 0 || std::strcmp(argv[i], "--log-wx") == 0) {
      const Mode wanted = argv[i][2] == 'd' ? Mode::deny_wx : Mode::log_wx;
      if (opt.mode != Mode::none && opt.mode != wanted) {
        std::fprintf(stderr, "pkeyctl run: --deny-wx and --log-wx exclude each other: choose one\n%s", kUsage);
        return 2;
      }
      opt.mode = wanted;
    } else if (std::strcmp(argv[i], "--log") == 0 || std::strncmp(argv[i], "--log=", 6) == 0) {
      const char* file = argv[i][5] == '=' ? argv[i] + 6 : i + 1 < argc ? argv[++i] : nullptr;
      if (!file || !*file || std::strcmp(file, "--") == 0) {
        std::fprintf(stderr, "pkeyctl run: --log needs a FILE\n%s", kUsage);
        return 2;
      }
      opt.log_path = file;
    } else if (is_execute_only_option(argv[i])) {
      execute_only = argv[i];
    } else if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      std::printf(
          "%s\n"
          "Runs PROGRAM with W^X enforced by a seccomp filter installed before exec:\n"
          "  --deny-wx  mmap, mprotect and pkey_mprotect asking for PROT_WRITE and\n"
          "             PROT_EXEC together (and shmat with SHM_EXEC, personality()\n"
          "             turning READ_IMPLIES_EXEC on, and i386's old_mmap, whose\n"
          "             arguments a filter cannot see) fail with EACCES, through\n"
          "             libc or raw system calls alike. A READ_IMPLIES_EXEC pkeyctl\n"
          "             inherited is cleared; a PROGRAM the kernel would start with\n"
          "             an executable stack or READ_IMPLIES_EXEC is refused (126).\n"
          "             On Linux 6.3+ the kernel's memory-deny-write-execute\n"
          "             (PR_SET_MDWE) is on too: it also refuses making memory\n"
          "             executable that was not (for W then X, map memory twice)\n"
          "  --log-wx   such calls succeed, and pkeyctl reports each on stderr.\n"
          "             pkeyctl stays until PROGRAM and all its descendants have\n"
          "             exited (a daemon's children included), passes SIGTERM,\n"
          "             SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 on to PROGRAM\n"
          "             (to the processes it adopted once PROGRAM is gone), and\n"
          "             never dies of SIGPIPE. Killed (SIGKILL), it can serve no\n"
          "             more: every later such call fails with ENOSYS\n"
          "  --log FILE with --log-wx: append the reports to FILE, not stderr\n"
          "  --verbose  say on stderr which mechanisms are active (MDWE: yes, or no\n"
          "             and why)\n"
          "  --execute-only[=strict|learn]  PROGRAM's code and its libraries' made\n"
          "             execute-only (x86 PKU; see README): strict, a read faults;\n"
          "             learn (the default), it is reported and allowed\n"
          "At most one of --deny-wx and --log-wx. PROGRAM is looked up in PATH.\n\n"
          "Exit status: PROGRAM's own, or 128+N when signal N killed it (as a shell\n"
          "reports it); 125 pkeyctl itself failed (the filter could not be installed,\n"
          "the log not opened); 126 PROGRAM was found but cannot be executed, or\n"
          "--deny-wx refused it; 127 PROGRAM was not found;\n"
          "2 usage error or an unrecognised PKEYS_WX (PROGRAM did not run);\n"
          "1 --execute-only refused PROGRAM (no PKU here, or PROGRAM is static).\n",
          kUsage);
      return 0;
    } else {
      std::fprintf(stderr, "pkeyctl run: unknown option '%s'\n%s", argv[i], kUsage);
      return 2;
    }
  }
  if (opt.mode == Mode::none && !execute_only) {
    std::fprintf(stderr, "pkeyctl run: choose --deny-wx, --log-wx or --execute-only\n%s", kUsage);
    return 2;
  }
  if (opt.log_path && opt.mode != Mode::log_wx) {
    std::fprintf(stderr, "pkeyctl run: --log goes with --log-wx (--deny-wx reports nothing)\n%s", kUsage);
    return 2;
  }
  if (i >= argc - 1) {
    std::fprintf(stderr, "pkeyctl run: no PROGRAM after '--'\n%s", kUsage);
    return 2;
  }
  char** program = argv + i + 1;
  if (execute_only) {
    if (const int status = pkeyctl::execute_only(execute_only, find_program(program[0])); status >= 0) return status;
    if (opt.mode == Mode::none) exec_program(program);
  }
  return opt.mode == Mode::deny_wx ? deny(program, opt) : log_only(program, opt);
}

}  // namespace pkeyctl
