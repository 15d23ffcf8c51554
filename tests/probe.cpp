// SPDX-License-Identifier: MIT
#include "probe.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "pkeys/pkeys.h"

namespace pkeys_test {
namespace {

int g_report_fd = -1;

void report_fault(int signo, siginfo_t* si, void*) {
  Outcome o{true, signo, si->si_code, pkeys_fault_pkey(si), pkeys_vkey_fault(si)};
  (void)!::write(g_report_fd, &o, sizeof o);
  ::_exit(0);
}

}  // namespace

Outcome probe(void* addr, Access access) {
  int fds[2];
  if (::pipe(fds) != 0) std::abort();
  const pid_t pid = ::fork();
  if (pid < 0) std::abort();
  if (pid == 0) {
    ::close(fds[0]);
    g_report_fd = fds[1];
    struct sigaction sa {};
    sa.sa_sigaction = report_fault;
    sa.sa_flags = SA_SIGINFO;
    ::sigaction(SIGSEGV, &sa, nullptr);
    ::sigaction(SIGBUS, &sa, nullptr);
    auto* p = static_cast<volatile char*>(addr);
    if (access == Access::read)
      (void)*p;
    else
      *p = 1;
    Outcome ok;
    (void)!::write(fds[1], &ok, sizeof ok);
    ::_exit(0);
  }
  ::close(fds[1]);
  Outcome o;
  o.faulted = true;  // a child that dies without a report did not succeed
  o.signo = -1;
  if (::read(fds[0], &o, sizeof o) != sizeof o) o = Outcome{true, -1, 0, -1, -1};
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return o;
}

std::string describe(const Outcome& o) {
  char buf[128];
  std::snprintf(buf, sizeof buf, "faulted=%d signo=%d code=%d key=%d", o.faulted, o.signo,
                o.code, o.fault_key);
  return buf;
}

std::size_t page_size() { return static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)); }

void* map_pages(std::size_t pages) {
  void* p = ::mmap(nullptr, pages * page_size(), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) std::abort();
  return p;
}

bool hardware_backend() { return (pkeys_capabilities() & PKEYS_CAP_HARDWARE) != 0; }
bool per_thread_rights() { return (pkeys_capabilities() & PKEYS_CAP_PER_THREAD_RIGHTS) != 0; }

}  // namespace pkeys_test
