// SPDX-License-Identifier: MIT
#include "core/diagnostics.hpp"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <mutex>

#include "core/fault_report.hpp"
#include "core/runtime.hpp"

namespace pkeys::core {
namespace {

std::mutex g_install_mutex;
bool g_installed = false;
struct sigaction g_previous {};

// Hands the fault to whoever handled SIGSEGV before pkeys did.
void hand_over(int sig, siginfo_t* si, void* ucontext) {
  if (g_previous.sa_flags & SA_SIGINFO) {
    if (g_previous.sa_sigaction) return g_previous.sa_sigaction(sig, si, ucontext);
  } else if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN) {
    return g_previous.sa_handler(sig);
  }
  // The default action: reset it and return; the access faults again and
  // the kernel ends the process as it would have.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ::sigaction(SIGSEGV, &dfl, nullptr);
}

void on_segv(int sig, siginfo_t* si, void* ucontext) {
  const int saved_errno = errno;
  FaultReport report;
  // Constructed before the handler was installed; never constructed here.
  Runtime* rt = Runtime::if_constructed();
  if (rt && rt->describe_fault(si, ucontext, &report))
    write_fault_report(STDERR_FILENO, report);
  errno = saved_errno;
  hand_over(sig, si, ucontext);
}

}  // namespace

int enable_fault_diagnostics(bool enable) {
  std::lock_guard lock(g_install_mutex);
  if (enable == g_installed) return 0;
  if (enable) {
    (void)Runtime::instance();  // choose the backend now, not in the handler
    struct sigaction sa {};
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    if (::sigaction(SIGSEGV, &sa, &g_previous) != 0) return -errno;
  } else {
    struct sigaction current {};
    if (::sigaction(SIGSEGV, nullptr, &current) != 0) return -errno;
    // Put the previous handler back only if ours is still the one installed.
    if ((current.sa_flags & SA_SIGINFO) && current.sa_sigaction == on_segv &&
        ::sigaction(SIGSEGV, &g_previous, nullptr) != 0)
      return -errno;
  }
  g_installed = enable;
  return 0;
}

}  // namespace pkeys::core
