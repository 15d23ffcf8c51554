// SPDX-License-Identifier: MIT
#include "core/wx_policy.hpp"

#include <sys/mman.h>
#include <sys/personality.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace pkeys::core {
namespace {

// Unset or empty means off. A value that is none of off, log, deny (a typo,
// "1", "yes") fails closed: the user asked for some W^X, so deny, and say so
// on stderr rather than silently switching the check off.
WxPolicy from_environment(const char** unrecognised) noexcept {
  const char* s = std::getenv("PKEYS_WX");
  *unrecognised = nullptr;
  if (!s || !*s || std::strcmp(s, "off") == 0) return WxPolicy::off;
  if (std::strcmp(s, "deny") == 0) return WxPolicy::deny;
  if (std::strcmp(s, "log") == 0) return WxPolicy::log;
  *unrecognised = s;
  return WxPolicy::deny;
}

void report_unrecognised(const char* value) noexcept {
  char line[160];
  const int n = std::snprintf(line, sizeof line,
                              "pkeys: PKEYS_WX='%.40s' is not off, log or deny: denying writable-and-executable "
                              "protections\n",
                              value);
  if (n > 0)
    (void)!::write(STDERR_FILENO, line, std::min(static_cast<std::size_t>(n), sizeof line - 1));
}

std::atomic<int> g_policy{-1};  // -1: not read yet

}  // namespace

WxPolicy wx_policy() noexcept {
  int p = g_policy.load(std::memory_order_acquire);
  if (p < 0) {
    const char* unrecognised = nullptr;
    const WxPolicy from_env = from_environment(&unrecognised);
    int expected = -1;
    // Only the thread that stores the value reports it: once per process.
    if (g_policy.compare_exchange_strong(expected, static_cast<int>(from_env)) && unrecognised)
      report_unrecognised(unrecognised);
    p = g_policy.load(std::memory_order_acquire);
  }
  return static_cast<WxPolicy>(p);
}

void set_wx_policy(WxPolicy p) noexcept { g_policy.store(static_cast<int>(p), std::memory_order_release); }

// Under READ_IMPLIES_EXEC (personality(2); the kernel also sets it for an
// i386 program without PT_GNU_STACK) the kernel adds PROT_EXEC to every
// request with PROT_READ, so PROT_READ|PROT_WRITE becomes writable and
// executable. Read per call: the personality can change at any time.
bool read_implies_exec() noexcept {
  const int persona = ::personality(0xffffffff);
  return persona != -1 && (static_cast<unsigned>(persona) & READ_IMPLIES_EXEC) != 0;
}

int check_wx(const char* caller, const void* addr, std::size_t len, int prot) noexcept {
  if (!(prot & PROT_WRITE) || !(prot & (PROT_EXEC | PROT_READ))) return 0;
  const WxPolicy p = wx_policy();
  if (p == WxPolicy::off) return 0;
  const bool implied = !(prot & PROT_EXEC);
  if (implied && !read_implies_exec()) return 0;
  if (p == WxPolicy::deny) return -EACCES;
  char line[192];
  const int n = std::snprintf(line, sizeof line, "pkeys: W^X: %s(%p, %zu, %s) allowed (policy: log)\n", caller, addr,
                              len, implied ? "PROT_READ|PROT_WRITE under READ_IMPLIES_EXEC" : "PROT_WRITE|PROT_EXEC");
  if (n > 0)
    (void)!::write(STDERR_FILENO, line, std::min(static_cast<std::size_t>(n), sizeof line - 1));
  return 0;
}

}  // namespace pkeys::core
