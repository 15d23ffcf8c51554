// SPDX-License-Identifier: MIT
#include "probe.hpp"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "pkeys/pkeys.h"

namespace pkeys_test {

std::string describe(const Outcome& o) {
  char buf[128];
  std::snprintf(buf, sizeof buf, "faulted=%d signo=%d code=%d key=%d", o.faulted, o.signo,
                o.code, o.fault_key);
  return buf;
}

namespace {
pkeys_sigjmp_buf g_here_env;
void on_fault_here(int) { pkeys_siglongjmp(g_here_env, 1); }
}  // namespace

bool can_access_here(void* addr, Access access) {
  struct sigaction sa {}, old_segv {}, old_bus {};
  sa.sa_handler = on_fault_here;
  sa.sa_flags = SA_NODEFER;
  ::sigaction(SIGSEGV, &sa, &old_segv);
  ::sigaction(SIGBUS, &sa, &old_bus);
  volatile bool ok = false;
  if (pkeys_sigsetjmp(g_here_env, 1) == 0) {
    auto* p = static_cast<volatile char*>(addr);
    const char c = *p;
    if (access == Access::write) *p = c;
    ok = true;
  }
  ::sigaction(SIGSEGV, &old_segv, nullptr);
  ::sigaction(SIGBUS, &old_bus, nullptr);
  return ok;
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

std::string errno_str() {
  const int e = errno;
  const char* name = ::strerrorname_np(e);
  return "errno " + std::to_string(e) + " " + (name ? name : "?") + " (" + std::strerror(e) + ")";
}

namespace {

std::string errno_name(int e) {
  if (e == 0) return "0 (none)";
  const char* name = ::strerrorname_np(e);
  return std::to_string(e) + " " + (name ? name : "?") + " (" + std::strerror(e) + ")";
}

}  // namespace

::testing::AssertionResult check_errno(const char* call, int expected, ErrnoResult got) {
  if (got.value == -1 && got.err == expected) return ::testing::AssertionSuccess();
  auto r = ::testing::AssertionFailure() << call << " returned ";
  if (!got.pointer)
    r << got.value;
  else if (got.value == -1)
    r << "MAP_FAILED";
  else
    r << "a mapping";
  // The caller's `<< context` follows on a line of its own.
  return r << " with errno " << errno_name(got.err) << "; expected "
           << (got.pointer ? "MAP_FAILED" : "-1") << " with errno " << errno_name(expected) << "\n";
}

namespace {

// "state S, SigBlk 0000000000000000" of a thread of this process.
std::string thread_state(pid_t tid) {
  const std::string dir = "/proc/self/task/" + std::to_string(tid);
  std::string out;
  std::ifstream status(dir + "/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("State:", 0) == 0 || line.rfind("SigBlk:", 0) == 0) out += " " + line;
  return out.empty() ? " (gone)" : out;
}

}  // namespace

std::string sync_error() {
  const int e = errno;
  std::string out = errno_str();
  pid_t missed[16];
  const int n = pkeys_sync_missed(missed, 16);
  if (n > 0) {
    out += "; " + std::to_string(n) + " thread(s) missed:";
    for (int i = 0; i < n && i < 16; ++i) out += " [" + std::to_string(missed[i]) + thread_state(missed[i]) + "]";
  }
  out += "; PKEYS_SYNC_TIMEOUT_MS " + std::to_string(sync_timeout().count());
  errno = e;
  return out;
}

std::chrono::milliseconds sync_timeout() {
  // As the library reads it (src/backend/thread_signal.cpp).
  if (const char* s = std::getenv("PKEYS_SYNC_TIMEOUT_MS"); s && std::atol(s) > 0)
    return std::chrono::milliseconds(std::atol(s));
  return std::chrono::milliseconds(200);
}

bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= end) return false;
    ::usleep(1000);
  }
  return true;
}

std::optional<bool> in_syscall(pid_t tid, long nr) {
  std::ifstream in("/proc/self/task/" + std::to_string(tid) + "/syscall");
  std::string first;
  if (!(in >> first)) return std::nullopt;
  // "running" while on a CPU, else the number of the call it sleeps in.
  return first == std::to_string(nr);
}

ScopedEnv::ScopedEnv(const char* name, const char* value) : name_(name) {
  if (const char* old = std::getenv(name)) old_ = old;
  if (value)
    ::setenv(name, value, 1);
  else
    ::unsetenv(name);
}

ScopedEnv::~ScopedEnv() {
  if (old_)
    ::setenv(name_.c_str(), old_->c_str(), 1);
  else
    ::unsetenv(name_.c_str());
}

}  // namespace pkeys_test
