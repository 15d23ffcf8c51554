// SPDX-License-Identifier: MIT
// pkeyctl info: what this machine offers and what pkeys chose.
#include <cpuid.h>
#include <sys/mman.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "commands.hpp"
#include "pkeys/pkeys.h"
#include "pkeys/pkru.h"

namespace pkeyctl {
namespace {

const char* yes_no(bool b) { return b ? "yes" : "no"; }

// Whether /proc/self/smaps reports each mapping's ProtectionKey.
bool smaps_has_protection_key() {
  std::ifstream in("/proc/self/smaps");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("ProtectionKey:", 0) == 0) return true;
  return false;
}

const char* rights_name(unsigned r) {
  switch (r) {
    case 0: return "read-write";
    case PKEY_DISABLE_WRITE: return "read-only";
    case PKEY_DISABLE_ACCESS: return "no-access";
    default: return "no-access";  // both bits
  }
}

}  // namespace

int info(int argc, char** argv) {
  if (argc > 1 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
    std::printf(
        "usage: pkeyctl info\n\n"
        "Shows the CPU's protection-key flags (PKU, OSPKE), the kernel's support,\n"
        "the backend pkeys chose and why, its capabilities, the W^X policy\n"
        "(PKEYS_WX), the free keys, what pkey_free does with a key whose pages\n"
        "are mapped (PKEYS_FREE) and the numbers it holds back (quarantined) with\n"
        "their ranges, and, on the hardware, this thread's PKRU register.\n\n"
        "Exit status: 0 success, 2 usage error.\n");
    return 0;
  }
  if (argc > 1) {
    std::fprintf(stderr, "pkeyctl info: unexpected argument '%s'\n", argv[1]);
    return 2;
  }
  unsigned a = 0, b = 0, c = 0, d = 0;
  bool pku = false, ospke = false;
  if (__get_cpuid_max(0, nullptr) >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    pku = (c >> 3) & 1u;
    ospke = (c >> 4) & 1u;
  }
  std::printf("cpu:\n  PKU    %s (CPUID.7.0:ECX bit 3)\n  OSPKE  %s (enabled by the OS)\n",
              yes_no(pku), yes_no(ospke));
  // Access disabled, the default: the number keeps no right once freed.
  const long k = ::syscall(SYS_pkey_alloc, 0, PKEY_DISABLE_ACCESS);
  const int alloc_errno = errno;
  if (k >= 0) ::syscall(SYS_pkey_free, k);
  std::printf("kernel:\n  pkey_alloc           %s\n  smaps ProtectionKey  %s\n",
              k >= 0 ? "works" : std::strerror(alloc_errno), yes_no(smaps_has_protection_key()));

  const unsigned caps = pkeys_capabilities();
  std::printf("backend:\n  name     %s\n  why      %s\n", pkeys_backend(), pkeys_backend_reason());
  std::printf("  capabilities:\n");
  std::printf("    hardware              %s\n", yes_no(caps & PKEYS_CAP_HARDWARE));
  std::printf("    per-thread rights     %s%s\n", yes_no(caps & PKEYS_CAP_PER_THREAD_RIGHTS),
              caps & PKEYS_CAP_PER_THREAD_RIGHTS ? "" : " (rights are process-wide)");
  std::printf("    execute-only          %s\n", yes_no(caps & PKEYS_CAP_EXECUTE_ONLY));
  std::printf("    fault key in si_pkey  %s\n", yes_no(caps & PKEYS_CAP_FAULT_PKEY));

  // The library's own answer, so that a PKEYS_WX it did not recognise shows
  // as the deny it falls back to.
  const int wx = pkeys_get_wx_policy();
  const char* wx_name = wx == PKEYS_WX_DENY ? "deny" : wx == PKEYS_WX_LOG ? "log" : "off";
  const char* env_wx = std::getenv("PKEYS_WX");
  std::printf("W^X policy (pkeys' own protection calls):\n  policy   %s\n", wx_name);
  if (const char* bad = unrecognised_pkeys_wx())
    std::printf("  from     PKEYS_WX='%s': not off, log or deny, so denied (fail closed); fix or unset it\n", bad);
  else
    std::printf("  from     %s%s\n", env_wx && *env_wx ? "PKEYS_WX=" : "default (PKEYS_WX unset)",
                env_wx && *env_wx ? env_wx : "");

  // The signal that reaches other threads (chosen now if this is the first
  // use): what a program must leave alone.
  const char* env_signal = std::getenv("PKEYS_SIGNAL");
  std::printf("cross-thread changes:\n");
  if (const int sig = pkeys_sync_signal(); sig > 0)
    std::printf("  signal   %d (SIGRTMIN+%d), %s\n", sig, sig - SIGRTMIN,
                env_signal && *env_signal ? "from PKEYS_SIGNAL" : "the highest real-time signal below SIGRTMAX with no handler");
  else
    std::printf("  signal   none: %s\n", errno == EBUSY ? "the program has its own handler on it (PKEYS_SIGNAL)"
                                        : errno == EINVAL ? "PKEYS_SIGNAL is not a real-time signal"
                                                          : "every real-time signal has a handler");

  // Free keys: what this process can still allocate.
  std::vector<int> taken;
  for (int key; (key = pkey_alloc(0, 0)) > 0;) taken.push_back(key);
  std::printf("keys:\n  numbers  %d (key 0 is the default key)\n  free     %zu\n",
              pkeys_max_keys(), taken.size());
  for (int key : taken) pkey_free(key);

  // What pkey_free does with a key whose pages are still mapped, and the
  // numbers it holds back for that reason, with the ranges that hold them.
  const char* env_free = std::getenv("PKEYS_FREE");
  std::printf("  pkey_free     %s (%s%s)\n",
              pkeys_get_free_mode() == PKEYS_FREE_STRICT
                  ? "strict: refused (EBUSY) while mapped pages carry the key"
                  : "quarantine: a key whose pages are mapped is freed, its number held back until they are gone",
              env_free && *env_free ? "PKEYS_FREE=" : "default, PKEYS_FREE unset", env_free && *env_free ? env_free : "");
  std::vector<int> held(64);
  const int nheld = std::max(0, pkeys_get_quarantined(held.data(), static_cast<int>(held.size())));
  held.resize(static_cast<std::size_t>(std::min(nheld, 64)));
  if (held.empty()) std::printf("  quarantined   none\n");
  std::vector<pkeys_range> ranges(static_cast<std::size_t>(std::max(0, pkeys_get_ranges(nullptr, 0))) + 16);
  const int nranges = std::max(0, std::min(pkeys_get_ranges(ranges.data(), static_cast<int>(ranges.size())),
                                           static_cast<int>(ranges.size())));
  for (int key : held) {
    std::printf("  quarantined   key %d, held by:", key);
    int shown = 0;
    for (int i = 0; i < nranges; ++i) {
      const pkeys_range& r = ranges[static_cast<std::size_t>(i)];
      if (r.pkey != key) continue;
      std::printf("\n    %p-%p", r.start, static_cast<void*>(static_cast<char*>(r.start) + r.len));
      ++shown;
    }
    std::printf("%s\n", shown ? "" : " no recorded range (pages the kernel still tags with it)");
  }

  pkeys_vkey_stats vs{};
  if (pkeys_vkey_get_stats(&vs) == 0)
    std::printf(
        "virtual keys (this process):\n  live %llu, cached %u of at most %u (%u hardware keys held), pinned %u\n"
        "  hits %llu, misses %llu, evictions %llu\n",
        vs.live, vs.cached, vs.capacity, vs.hardware_keys, vs.pinned, vs.hits, vs.misses, vs.evictions);

  if (caps & PKEYS_CAP_HARDWARE) {
    const std::uint32_t pkru = pkeys_rdpkru();
    std::printf("this thread's PKRU: 0x%08x\n", pkru);
    for (int key = 0; key < pkeys_max_keys(); ++key)
      std::printf("  key %2d  %s\n", key, rights_name(pkeys_pkru_rights(pkru, key)));
  }
  return 0;
}

}  // namespace pkeyctl
