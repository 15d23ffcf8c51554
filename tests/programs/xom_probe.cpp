// SPDX-License-Identifier: MIT
// A dynamically linked program run under pkeyctl run --execute-only in the
// PKU lane (scripts/pku-lane-init.sh). It is not built against pkeys: it is
// the "unmodified program".
//   xom_probe check       its own code, libc's and a dlopen'ed library's are
//                         execute-only (/proc/self/smaps: --xp, one nonzero
//                         ProtectionKey), and calls, dladdr, C++ exceptions
//                         (through the library too), threads, signals,
//                         pkey_alloc, fork and exec all work: exit 0
//   xom_probe read-code   reads its own code: strict dies of SIGSEGV, learn
//                         prints "read-code: read" and exits 0
//   xom_probe own-handler the program's own SIGSEGV handler (sigaction) runs
//                         for a fault of its own: exit 42
//   xom_probe exec-child  (run by check through exec) its code is --x
//   xom_probe pause       prints its pid and waits (for pkeyctl maps)
//   xom_probe reused-report-fd  closes learn mode's report pipe, opens a
//                         file under its number and reads its own code: the
//                         report must not land in the file (exit 0)
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
  if (!ok) ++failures;
}

struct Mapping {
  std::string perms, name;
  int key = -1;  // -1: no ProtectionKey field
  bool found = false;
};

// The mapping of /proc/self/smaps holding `address`.
Mapping mapping_of(const void* address) {
  const auto a = reinterpret_cast<std::uintptr_t>(address);
  std::ifstream in("/proc/self/smaps");
  Mapping m;
  bool inside = false;
  for (std::string line; std::getline(in, line);) {
    unsigned long long lo, hi;
    char perms[8];
    int name_at = 0;
    if (std::sscanf(line.c_str(), "%llx-%llx %7s %*s %*s %*s %n", &lo, &hi, perms, &name_at) >= 3 &&
        line.find(':') > line.find(' ')) {
      if (inside) break;
      inside = a >= lo && a < hi;
      if (inside) {
        m.found = true;
        m.perms = perms;
        m.name = name_at > 0 ? line.substr(static_cast<std::size_t>(name_at)) : "";
      }
    } else if (inside && line.rfind("ProtectionKey:", 0) == 0) {
      m.key = std::atoi(line.c_str() + 14);
    }
  }
  return m;
}

// The code at `address` is execute-only: --xp with a nonzero key (the same
// key for every object: `*key`, set by the first).
void check_execute_only(const void* address, const char* what, int* key) {
  const Mapping m = mapping_of(address);
  check(m.found && m.perms == "--xp" && m.key > 0 && (*key < 0 || m.key == *key),
        std::string(what) + "'s code is execute-only: " + m.perms + " key " + std::to_string(m.key) + " " + m.name);
  if (*key < 0) *key = m.key;
}

__attribute__((noinline)) int own_function(int x) { return x * 3 + 1; }

std::string plugin_path() {
  char self[4096];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  std::string dir(self, n > 0 ? static_cast<std::size_t>(n) : 0);
  dir.resize(dir.rfind('/') + 1);
  return dir + "libxom_plugin.so";
}

std::atomic<int> usr1_seen{0};

int check_all(const char* self) {
  int key = -1;
  check_execute_only(reinterpret_cast<const void*>(&own_function), "the program", &key);
  void* libc_getpid = ::dlsym(RTLD_DEFAULT, "getpid");
  check(libc_getpid != nullptr, "dlsym(getpid)");
  if (libc_getpid) check_execute_only(libc_getpid, "libc", &key);
  void* plugin = ::dlopen(plugin_path().c_str(), RTLD_NOW);
  check(plugin != nullptr, "dlopen " + plugin_path() + (plugin ? "" : std::string(": ") + ::dlerror()));
  if (!plugin) return 1;
  auto add = reinterpret_cast<int (*)(int, int)>(::dlsym(plugin, "xom_plugin_add"));
  auto thrower = reinterpret_cast<void (*)(int)>(::dlsym(plugin, "xom_plugin_throw"));
  check(add && thrower, "dlsym in the plugin");
  if (!add || !thrower) return 1;
  check_execute_only(reinterpret_cast<const void*>(add), "the dlopen'ed library", &key);

  check(own_function(2) == 7 && add(2, 3) == 5 && ::getpid() > 0, "calls into the program, the library and libc");
  Dl_info info{};
  const int found = ::dladdr(reinterpret_cast<const void*>(add), &info);
  check(found != 0 && info.dli_fname &&
            std::strstr(info.dli_fname, "xom_plugin") && info.dli_sname &&
            std::strcmp(info.dli_sname, "xom_plugin_add") == 0,
        std::string("dladdr: ") + (info.dli_fname ? info.dli_fname : "?") + " " + (info.dli_sname ? info.dli_sname : "?"));
  std::string caught;
  try {
    thrower(7);
  } catch (const std::runtime_error& e) {
    caught = e.what();
  }
  check(caught == "thrown by xom_plugin: 7", "an exception thrown in the library, caught here: '" + caught + "'");
  caught.clear();
  try {
    throw std::logic_error("thrown here");
  } catch (const std::exception& e) {
    caught = e.what();
  }
  check(caught == "thrown here", "an exception thrown and caught here");

  int from_thread = 0;
  std::thread([&] { from_thread = add(own_function(1), 1); }).join();
  check(from_thread == 5, "a thread calls into the library");

  struct sigaction sa{};
  sa.sa_handler = [](int) { usr1_seen.fetch_add(1); };
  ::sigemptyset(&sa.sa_mask);
  check(::sigaction(SIGUSR1, &sa, nullptr) == 0 && ::raise(SIGUSR1) == 0 && usr1_seen.load() == 1,
        "a signal handler runs");

  const int own_key = ::pkey_alloc(0, 0);
  check(own_key > 0 && own_key != key, "the program's own pkey_alloc: key " + std::to_string(own_key) +
                                           " (execute-only key " + std::to_string(key) + ")");
  if (own_key > 0) ::pkey_free(own_key);

  const pid_t child = ::fork();
  if (child == 0) {
    const Mapping m = mapping_of(reinterpret_cast<const void*>(add));
    ::_exit(m.perms == "--xp" && m.key == key && add(own_function(0), 1) == 2 ? 0 : 1);
  }
  int status = -1;
  check(child > 0 && ::waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
        "a forked child's code stays execute-only and runs");

  std::fflush(stdout);
  const pid_t exec_child = ::fork();
  if (exec_child == 0) {
    ::execl(self, self, "exec-child", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  status = -1;
  check(exec_child > 0 && ::waitpid(exec_child, &status, 0) == exec_child && WIFEXITED(status) &&
            WEXITSTATUS(status) == 0,
        "a program it execs runs with its code execute-only too");
  ::dlclose(plugin);
  std::printf("xom_probe check: %d failure(s)\n", failures);
  return failures == 0 ? 0 : 1;
}

volatile unsigned char sink;

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "check") return check_all(argv[0]);
  if (mode == "exec-child") {
    int key = -1;
    check_execute_only(reinterpret_cast<const void*>(&own_function), "the exec'ed program", &key);
    return failures == 0 ? 0 : 1;
  }
  if (mode == "read-code") {
    const auto* code = reinterpret_cast<const volatile unsigned char*>(&own_function);
    sink = code[0];
    std::printf("read-code: read 0x%02x from own_function\n", sink);
    return 0;
  }
  if (mode == "own-handler") {
    struct sigaction sa{};
    sa.sa_sigaction = [](int, siginfo_t* info, void*) {
      static const char line[] = "own-handler: the program's SIGSEGV handler ran\n";
      ::write(1, line, sizeof line - 1);
      ::_exit(info->si_code == SEGV_ACCERR ? 42 : 41);
    };
    sa.sa_flags = SA_SIGINFO;
    ::sigemptyset(&sa.sa_mask);
    void* page = ::mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED || ::sigaction(SIGSEGV, &sa, nullptr) != 0) return 1;
    sink = *static_cast<volatile unsigned char*>(page);
    return 2;  // not reached: the read faults
  }
  if (mode == "reused-report-fd") {
    const char* report = std::getenv("PKEYS_XOM_REPORT_FD");
    if (!report) return 3;
    const int fd = std::atoi(report);
    ::close(fd);
    const int file = ::open("/tmp/xom-reused-report-fd", O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0600);
    if (file < 0 || (file != fd && ::dup2(file, fd) != fd)) return 4;
    const auto* code = reinterpret_cast<const volatile unsigned char*>(&own_function);
    sink = code[0];
    struct stat st{};
    ::fstat(fd, &st);
    std::printf("reused-report-fd: read own code; the file under fd %d holds %lld byte(s)\n", fd,
                static_cast<long long>(st.st_size));
    return st.st_size == 0 ? 0 : 1;
  }
  if (mode == "pause") {
    std::printf("%d\n", static_cast<int>(::getpid()));
    for (;;) ::pause();
  }
  std::fprintf(stderr, "usage: xom_probe check|read-code|own-handler|pause\n");
  return 2;
}
