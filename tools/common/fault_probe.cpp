// SPDX-License-Identifier: MIT
#include "fault_probe.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>

#include "pkeys/pkeys.h"

namespace pkeys_probe {
namespace {

int g_report_fd = -1;

// In the child only: async-signal-safe calls, then gone.
void report_fault(int signo, siginfo_t* si, void*) {
  Outcome o;
  o.faulted = true;
  o.signo = signo;
  o.code = si->si_code;
  o.fault_key = pkeys_fault_pkey(si);
  o.fault_vkey = pkeys_vkey_fault(si);
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
    auto* p = static_cast<volatile unsigned char*>(addr);
    Outcome ok;
    if (access == Access::read)
      ok.value = *p;
    else
      *p = 1;
    (void)!::write(fds[1], &ok, sizeof ok);
    ::_exit(0);
  }
  ::close(fds[1]);
  Outcome o;
  // A child that dies without a report did not succeed.
  if (::read(fds[0], &o, sizeof o) != sizeof o) {
    o = Outcome{};
    o.faulted = true;
    o.signo = -1;
  }
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return o;
}

}  // namespace pkeys_probe
