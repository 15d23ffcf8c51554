// SPDX-License-Identifier: MIT
// pkeyctl demo: keep a secret in a key-protected page, show that reading it
// faults while access is disabled and works once granted.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "commands.hpp"
#include "pkeys/pkeys.hpp"

namespace pkeyctl {
namespace {

int g_report_fd = -1;

void report_fault(int, siginfo_t* si, void*) {
  const int key = pkeys_fault_pkey(si);
  (void)!::write(g_report_fd, &key, sizeof key);
  ::_exit(0);
}

// Reads the first byte of `secret` in a child process (which inherits this
// thread's rights). Returns -2 when the read succeeded, else the key that
// pkeys_fault_pkey named for the fault (-1 if none).
int read_in_child(const char* secret, char* seen) {
  int fds[2];
  if (::pipe(fds) != 0) return -3;
  const pid_t pid = ::fork();
  if (pid < 0) return -3;
  if (pid == 0) {
    ::close(fds[0]);
    g_report_fd = fds[1];
    struct sigaction sa {};
    sa.sa_sigaction = report_fault;
    sa.sa_flags = SA_SIGINFO;
    ::sigaction(SIGSEGV, &sa, nullptr);
    const char c = *static_cast<const volatile char*>(secret);
    const int ok = -2 - (static_cast<unsigned char>(c) << 8);
    (void)!::write(fds[1], &ok, sizeof ok);
    ::_exit(0);
  }
  ::close(fds[1]);
  int result = -3;
  if (::read(fds[0], &result, sizeof result) != sizeof result) result = -3;
  ::close(fds[0]);
  ::waitpid(pid, nullptr, 0);
  if (result <= -2 && result != -3) {
    *seen = static_cast<char>((-2 - result) >> 8);
    return -2;
  }
  return result;
}

}  // namespace

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

  char seen = 0;
  const int denied = read_in_child(static_cast<const char*>(page->data()), &seen);
  if (denied != key->id()) {
    std::fprintf(stderr, "pkeyctl demo: FAILED: reading with access disabled %s\n",
                 denied == -2 ? "succeeded" : "did not fault on the key");
    return 1;
  }
  std::printf("read with access disabled: SIGSEGV, pkeys_fault_pkey() = %d  [blocked]\n", denied);

  bool granted_ok = false;
  {
    pkeys::scoped_rights grant(*key, pkeys::rights::read_only());
    granted_ok = read_in_child(static_cast<const char*>(page->data()), &seen) == -2 &&
                 seen == kSecret[0] &&
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
