// SPDX-License-Identifier: MIT
#include "core/diagnostics.hpp"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <mutex>

#include "core/fault_report.hpp"
#include "core/runtime.hpp"

namespace pkeys::core {
namespace {

std::mutex g_install_mutex;
bool g_installed = false;
// The handler pkeys' replaced; written only while pkeys' is not installed.
struct sigaction g_previous {};
// A previous handler with SA_RESETHAND has been called: the kernel would
// have reset it to the default action before calling it.
std::atomic<bool> g_previous_spent{false};

void on_segv(int sig, siginfo_t* si, void* ucontext);

bool is_ours(const struct sigaction& sa) {
  return (sa.sa_flags & SA_SIGINFO) && sa.sa_sigaction == on_segv;
}

// The default action of SIGSEGV for this signal. A fault (si_code > 0)
// faults again when the handler returns and the kernel ends the process at
// the faulting instruction, as it would have; a signal that was sent
// (raise, kill, sigqueue: si_code <= 0) does not come back: it is raised
// again, unblocked, with the default action.
void default_action(int sig, const siginfo_t* si) {
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  ::sigaction(sig, &dfl, nullptr);
  if (si && si->si_code > 0) return;
  sigset_t only;
  sigemptyset(&only);
  sigaddset(&only, sig);
  ::pthread_sigmask(SIG_UNBLOCK, &only, nullptr);
  ::raise(sig);
}

// Hands the signal to whoever handled SIGSEGV before pkeys did, as the
// kernel would have called it: its sa_mask and the signal itself (unless
// SA_NODEFER) blocked during the call, SA_SIGINFO or a plain handler, and
// SA_RESETHAND making it a one-shot.
void hand_over(int sig, siginfo_t* si, void* ucontext) {
  const struct sigaction prev = g_previous;
  const bool sent = !si || si->si_code <= 0;
  if (prev.sa_flags & SA_RESETHAND) {
    if (g_previous_spent.exchange(true, std::memory_order_acq_rel)) return default_action(sig, si);
  }
  const bool has_function = (prev.sa_flags & SA_SIGINFO)
                                ? prev.sa_sigaction != nullptr
                                : prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN;
  if (!has_function) {
    // An ignored SIGSEGV that was sent stays ignored; a fault is never
    // ignored (the kernel forces the default action).
    if (!(prev.sa_flags & SA_SIGINFO) && prev.sa_handler == SIG_IGN && sent) return;
    return default_action(sig, si);
  }
  sigset_t during, saved;
  ::pthread_sigmask(SIG_SETMASK, nullptr, &during);
  for (int s = 1; s < NSIG; ++s)
    if (sigismember(&prev.sa_mask, s) == 1) sigaddset(&during, s);
  if (!(prev.sa_flags & SA_NODEFER)) sigaddset(&during, sig);
  ::pthread_sigmask(SIG_SETMASK, &during, &saved);
  if (prev.sa_flags & SA_SIGINFO)
    prev.sa_sigaction(sig, si, ucontext);
  else
    prev.sa_handler(sig);
  ::pthread_sigmask(SIG_SETMASK, &saved, nullptr);
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
  errno = saved_errno;
}

}  // namespace

int enable_fault_diagnostics(bool enable) {
  std::lock_guard lock(g_install_mutex);
  struct sigaction current {};
  if (::sigaction(SIGSEGV, nullptr, &current) != 0) return -errno;
  if (enable) {
    if (is_ours(current)) {
      g_installed = true;
      return 0;
    }
    // Not installed, or the program replaced pkeys' handler since: pkeys'
    // goes (back) in front, handing over to the handler in place now.
    (void)Runtime::instance();  // choose the backend now, not in the handler
    g_previous = current;  // pkeys' handler is not installed: no reader
    g_previous_spent.store(false, std::memory_order_release);
    struct sigaction sa {};
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    struct sigaction replaced {};
    if (::sigaction(SIGSEGV, &sa, &replaced) != 0) return -errno;
    // Another thread installed a handler between the two calls: that one.
    if (replaced.sa_handler != current.sa_handler || replaced.sa_flags != current.sa_flags) g_previous = replaced;
    g_installed = true;
    return 0;
  }
  if (!g_installed) return 0;
  // Put the previous handler back only if pkeys' is still the one
  // installed (a handler the program installed since is left alone); a
  // one-shot handler already called is spent: the default action.
  if (is_ours(current)) {
    struct sigaction back = g_previous;
    if ((back.sa_flags & SA_RESETHAND) && g_previous_spent.load(std::memory_order_acquire)) {
      back = {};
      back.sa_handler = SIG_DFL;
      sigemptyset(&back.sa_mask);
    }
    if (::sigaction(SIGSEGV, &back, nullptr) != 0) return -errno;
  }
  g_installed = false;
  return 0;
}

}  // namespace pkeys::core
