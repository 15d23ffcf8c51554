// SPDX-License-Identifier: MIT
#include "core/wx_policy.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace pkeys::core {
namespace {

WxPolicy from_environment() noexcept {
  const char* s = std::getenv("PKEYS_WX");
  if (s && std::strcmp(s, "deny") == 0) return WxPolicy::deny;
  if (s && std::strcmp(s, "log") == 0) return WxPolicy::log;
  return WxPolicy::off;
}

std::atomic<int> g_policy{-1};  // -1: not read yet

}  // namespace

WxPolicy wx_policy() noexcept {
  int p = g_policy.load(std::memory_order_acquire);
  if (p < 0) {
    int expected = -1;
    g_policy.compare_exchange_strong(expected, static_cast<int>(from_environment()));
    p = g_policy.load(std::memory_order_acquire);
  }
  return static_cast<WxPolicy>(p);
}

void set_wx_policy(WxPolicy p) noexcept { g_policy.store(static_cast<int>(p), std::memory_order_release); }

int check_wx(const char* caller, const void* addr, std::size_t len, int prot) noexcept {
  if ((prot & (PROT_WRITE | PROT_EXEC)) != (PROT_WRITE | PROT_EXEC)) return 0;
  const WxPolicy p = wx_policy();
  if (p == WxPolicy::off) return 0;
  if (p == WxPolicy::deny) return -EACCES;
  char line[160];
  const int n = std::snprintf(line, sizeof line,
                              "pkeys: W^X: %s(%p, %zu, PROT_WRITE|PROT_EXEC) allowed (policy: log)\n", caller,
                              addr, len);
  if (n > 0)
    (void)!::write(STDERR_FILENO, line, std::min(static_cast<std::size_t>(n), sizeof line - 1));
  return 0;
}

}  // namespace pkeys::core
