// SPDX-License-Identifier: MIT
// pkeyctl run: W^X for unmodified programs.
//
// --deny-wx installs a seccomp filter before exec that fails mmap, mmap2,
// mprotect and pkey_mprotect asking for PROT_WRITE and PROT_EXEC together,
// and shmat with SHM_EXEC, with EACCES, as systemd's
// MemoryDenyWriteExecute does; the filter covers the x86-64, i386 and x32
// system call tables, so raw system calls cannot get around it.
// --log-wx lets the program run and reports each such call: the filter
// hands it to pkeyctl (SECCOMP_RET_USER_NOTIF), which prints it and lets
// the kernel carry it out (SECCOMP_USER_NOTIF_FLAG_CONTINUE).
#include <poll.h>
#include <signal.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "commands.hpp"

namespace pkeyctl {
namespace {

constexpr int kFailure = 125;  // pkeyctl itself failed (as env(1), timeout(1))

// Builds the filter; `action` for the offending calls.
scmp_filter_ctx build_filter(std::uint32_t action, std::string* error) {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (!ctx) {
    *error = "seccomp_init failed";
    return nullptr;
  }
  for (std::uint32_t arch : {SCMP_ARCH_X86, SCMP_ARCH_X32}) {
    const int r = seccomp_arch_add(ctx, arch);
    if (r != 0 && r != -EEXIST) {
      *error = std::string("seccomp_arch_add: ") + std::strerror(-r);
      seccomp_release(ctx);
      return nullptr;
    }
  }
  const scmp_datum_t wx = PROT_WRITE | PROT_EXEC;
  struct Rule {
    const char* name;
    scmp_datum_t mask, value;
  };
  const Rule rules[] = {{"mmap", wx, wx},
                        {"mmap2", wx, wx},
                        {"mprotect", wx, wx},
                        {"pkey_mprotect", wx, wx},
                        {"shmat", SHM_EXEC, SHM_EXEC}};
  for (const Rule& rule : rules) {
    const int nr = seccomp_syscall_resolve_name(rule.name);
    if (nr == __NR_SCMP_ERROR) continue;
    // The protection (or shmat's flags) is the third argument everywhere.
    // Spelt out: SCMP_A2() is a C compound literal, not ISO C++.
    scmp_arg_cmp cmp{};
    cmp.arg = 2;
    cmp.op = SCMP_CMP_MASKED_EQ;
    cmp.datum_a = rule.mask;
    cmp.datum_b = rule.value;
    const int r = seccomp_rule_add_array(ctx, action, nr, 1, &cmp);
    if (r != 0) {
      *error = std::string("seccomp_rule_add(") + rule.name + "): " + std::strerror(-r);
      seccomp_release(ctx);
      return nullptr;
    }
  }
  return ctx;
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

int deny(char** program) {
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

// Prints each offending call and lets it proceed, until the child exits.
int supervise(pid_t child, int notify_fd) {
  int status = 0;
  for (;;) {
    pollfd p{notify_fd, POLLIN, 0};
    const int ready = ::poll(&p, 1, 100);
    if (ready > 0 && (p.revents & POLLIN)) {
      // The kernel wants a zeroed request each time, of its own size.
      seccomp_notif* req = nullptr;
      seccomp_notif_resp* resp = nullptr;
      if (seccomp_notify_alloc(&req, &resp) != 0) {
        std::fputs("pkeyctl run: seccomp_notify_alloc failed: stopping the program\n", stderr);
        ::kill(child, SIGKILL);
        ::waitpid(child, &status, 0);
        return kFailure;
      }
      if (seccomp_notify_receive(notify_fd, req) == 0) {
        char* name = seccomp_syscall_resolve_num_arch(req->data.arch, req->data.nr);
        const bool is_shmat = name && std::strcmp(name, "shmat") == 0;
        std::fprintf(stderr, "pkeyctl: W^X: pid %d: %s(0x%llx, %llu, %s)\n", req->pid, name ? name : "?",
                     static_cast<unsigned long long>(req->data.args[0]),
                     static_cast<unsigned long long>(req->data.args[1]),
                     is_shmat ? "SHM_EXEC" : prot_string(req->data.args[2]).c_str());
        std::free(name);
        resp->id = req->id;
        resp->error = 0;
        resp->val = 0;
        resp->flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
        seccomp_notify_respond(notify_fd, resp);  // ENOENT: the caller is gone
      }
      seccomp_notify_free(req, resp);
    }
    const pid_t w = ::waitpid(child, &status, WNOHANG);
    if (w == child) break;
    if (ready > 0 && (p.revents & (POLLHUP | POLLERR)) && !(p.revents & POLLIN)) {
      ::waitpid(child, &status, 0);
      break;
    }
  }
  return exit_status(status);
}

int log_only(char** program) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    std::fprintf(stderr, "pkeyctl run: socketpair: %s\n", std::strerror(errno));
    return kFailure;
  }
  const pid_t child = ::fork();
  if (child < 0) {
    std::fprintf(stderr, "pkeyctl run: fork: %s\n", std::strerror(errno));
    return kFailure;
  }
  if (child == 0) {
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
  ::close(sv[1]);
  const int fd = receive_fd(sv[0]);
  ::close(sv[0]);
  if (fd < 0) {  // the child said why, and exits 125
    int status = 0;
    ::waitpid(child, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : kFailure;
  }
  const int r = supervise(child, fd);
  ::close(fd);
  return r;
}

}  // namespace

int run(int argc, char** argv) {
  static const char kUsage[] = "usage: pkeyctl run --deny-wx|--log-wx -- PROGRAM [ARGS...]\n";
  int i = 1;
  enum { none, deny_wx, log_wx } mode = none;
  for (; i < argc && std::strcmp(argv[i], "--") != 0; ++i) {
    if (std::strcmp(argv[i], "--deny-wx") == 0 || std::strcmp(argv[i], "--log-wx") == 0) {
      const auto wanted = argv[i][2] == 'd' ? deny_wx : log_wx;
      if (mode != none && mode != wanted) {
        std::fprintf(stderr, "pkeyctl run: --deny-wx and --log-wx exclude each other: choose one\n%s", kUsage);
        return 2;
      }
      mode = wanted;
    } else if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      std::printf(
          "%s\n"
          "Runs PROGRAM with W^X enforced by a seccomp filter installed before exec:\n"
          "  --deny-wx  mmap, mprotect and pkey_mprotect asking for PROT_WRITE and\n"
          "             PROT_EXEC together (and shmat with SHM_EXEC) fail with EACCES,\n"
          "             through libc or raw system calls alike\n"
          "  --log-wx   such calls succeed, and pkeyctl reports each on stderr\n"
          "One of the two, not both. PROGRAM is looked up in PATH.\n\n"
          "Exit status: PROGRAM's own, or 128+N when signal N killed it (as a shell\n"
          "reports it); 125 pkeyctl itself failed (the filter could not be installed);\n"
          "126 PROGRAM was found but cannot be executed; 127 PROGRAM was not found;\n"
          "2 usage error or an unrecognised PKEYS_WX (PROGRAM did not run).\n",
          kUsage);
      return 0;
    } else {
      std::fprintf(stderr, "pkeyctl run: unknown option '%s'\n%s", argv[i], kUsage);
      return 2;
    }
  }
  if (mode == none) {
    std::fprintf(stderr, "pkeyctl run: choose --deny-wx or --log-wx\n%s", kUsage);
    return 2;
  }
  if (i >= argc - 1) {
    std::fprintf(stderr, "pkeyctl run: no PROGRAM after '--'\n%s", kUsage);
    return 2;
  }
  char** program = argv + i + 1;
  return mode == deny_wx ? deny(program) : log_only(program);
}

}  // namespace pkeyctl
