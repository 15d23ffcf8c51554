// SPDX-License-Identifier: MIT
// pkeyctl demo: keep a secret in a key-protected page, show that reading it
// faults while access is disabled and works once granted.
#include <cstdio>
#include <cstring>

#include "commands.hpp"
#include "fault_probe.hpp"
#include "pkeys/pkeys.hpp"

namespace pkeyctl {

int demo(int argc, char** argv) {
  if (argc > 1 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
    std::printf(
        "usage: pkeyctl demo\n\n"
        "Allocates a key, keeps a secret in a page tagged with it, and shows that\n"
        "reading the secret faults while access is disabled and works once granted.\n\n"
        "Exit status: 0 the key behaved as it should, 1 it did not (or no key or\n"
        "page could be had), 2 usage error or an unrecognised PKEYS_WX.\n");
    return 0;
  }
  if (argc > 1) {
    std::fprintf(stderr, "pkeyctl demo: unexpected argument '%s'\n", argv[1]);
    return 2;
  }
  std::printf("backend: %s (%s)\n", pkeys_backend(), pkeys_backend_reason());
  auto key = pkeys::key::allocate(pkeys::rights::no_access());
  if (!key) {
    std::fprintf(stderr, "pkeyctl demo: pkey_alloc: %s\n", key.error().message().c_str());
    return 1;
  }
  std::printf("allocated key %d, access disabled\n", key->id());
  auto page = pkeys::region::map(4096, PROT_READ | PROT_WRITE, *key);
  if (!page) {
    std::fprintf(stderr, "pkeyctl demo: map: %s\n", page.error().message().c_str());
    return 1;
  }
  static const char kSecret[] = "correct horse battery staple";
  {
    pkeys::scoped_rights write(*key, pkeys::rights::read_write());
    std::memcpy(page->data(), kSecret, sizeof kSecret);
  }
  std::printf("stored a secret at %p in a page tagged with key %d\n", page->data(), key->id());

  // Each read is made in a child process, which inherits this thread's rights.
  const auto denied = pkeys_probe::probe(page->data(), pkeys_probe::Access::read);
  if (!denied.faulted || denied.fault_key != key->id()) {
    std::fprintf(stderr, "pkeyctl demo: FAILED: reading with access disabled %s\n",
                 denied.faulted ? "did not fault on the key" : "succeeded");
    return 1;
  }
  std::printf("read with access disabled: SIGSEGV, pkeys_fault_pkey() = %d  [blocked]\n",
              denied.fault_key);

  bool granted_ok = false;
  {
    pkeys::scoped_rights grant(*key, pkeys::rights::read_only());
    const auto granted = pkeys_probe::probe(page->data(), pkeys_probe::Access::read);
    granted_ok = !granted.faulted && granted.value == static_cast<unsigned char>(kSecret[0]) &&
                 std::memcmp(page->data(), kSecret, sizeof kSecret) == 0;
  }
  if (!granted_ok) {
    std::fprintf(stderr, "pkeyctl demo: FAILED: reading with access granted did not work\n");
    return 1;
  }
  std::printf("read with access granted: \"%s\"  [allowed]\n", kSecret);
  std::printf("access disabled again; enforced by the %s backend%s\n", pkeys_backend(),
              (pkeys_capabilities() & PKEYS_CAP_HARDWARE)
                  ? " (the CPU's PKRU register, per thread)"
                  : " (page protections via mprotect, process-wide)");
  return 0;
}

}  // namespace pkeyctl
