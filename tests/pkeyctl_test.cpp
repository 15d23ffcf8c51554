// SPDX-License-Identifier: MIT
// pkeyctl scan and pkeyctl run, as a user runs them.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

namespace {

struct Result {
  int status = -1;  // exit status, or 128 + signal
  std::string out, err;
};

std::string drain(int fd) {
  std::string s;
  char buf[4096];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) s.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  return s;
}

Result run(std::vector<std::string> args) {
  int out[2], err[2];
  if (::pipe(out) != 0 || ::pipe(err) != 0) return {};
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], 1);
    ::dup2(err[1], 2);
    ::close(out[0]);
    ::close(err[0]);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(out[1]);
  ::close(err[1]);
  Result r;
  r.err = drain(err[0]);  // the tools write little: no deadlock on two pipes
  r.out = drain(out[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

const std::string kPkeyctl = PKEYCTL_PATH;

// A scan target running in the background (it sleeps 30 s).
struct Running {
  explicit Running(const char* path) : pid(::fork()) {
    if (pid == 0) {
      ::execl(path, path, nullptr);
      ::_exit(127);
    }
    ::usleep(100000);
  }
  ~Running() {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
  pid_t pid;
};

// Whether this kernel runs i386 system calls (int 0x80): the probe says.
bool int80_supported() {
  static const bool supported = !contains(run({WX_PROBE_PATH}).out, "int80-mprotect-rwx: unsupported");
  return supported;
}

bool seccomp_works() {
  static const bool works = run({kPkeyctl, "run", "--deny-wx", "--", "/bin/true"}).status == 0;
  return works;
}

}  // namespace

TEST(PkeyctlScan, FindsPlantedGadgetsInAFile) {
  const Result r = run({kPkeyctl, "scan", PLANTED_PATH});
  EXPECT_EQ(r.status, 1) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "WRPKRU  GADGET     .text  planted_wrpkru+0x0")) << r.out;
  EXPECT_TRUE(contains(r.out, "XRSTOR  GADGET     .text  planted_xrstor+0x0")) << r.out;
  EXPECT_TRUE(contains(r.out, "2 sequence(s), 2 outside pkeys' own switch routines")) << r.out;
}

TEST(PkeyctlScan, CleanFileIsNotFlagged) {
  const Result r = run({kPkeyctl, "scan", CLEAN_PATH});
  EXPECT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "0 sequence(s), 0 outside")) << r.out;
}

TEST(PkeyctlScan, PkeysOwnSwitchesAreAllowed) {
  // pkeyctl holds WRPKRUs inlined from <pkeys/pkeys.hpp>, all recorded.
  const Result r = run({kPkeyctl, "scan", kPkeyctl});
  EXPECT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "WRPKRU  allowed")) << r.out;
  EXPECT_TRUE(contains(r.out, " 0 outside pkeys' own switch routines")) << r.out;
}

TEST(PkeyctlScan, LiveProcesses) {
  Running planted(PLANTED_PATH), clean(CLEAN_PATH);
  const Result bad = run({kPkeyctl, "scan", std::to_string(planted.pid)});
  EXPECT_EQ(bad.status, 1) << bad.out << bad.err;
  EXPECT_TRUE(contains(bad.out, "planted_wrpkru+0x0")) << bad.out;
  EXPECT_TRUE(contains(bad.out, "planted_xrstor+0x0")) << bad.out;
  const Result good = run({kPkeyctl, "scan", std::to_string(clean.pid)});
  EXPECT_EQ(good.status, 0) << good.out << good.err;
}

TEST(PkeyctlScan, Errors) {
  EXPECT_EQ(run({kPkeyctl, "scan"}).status, 2);
  EXPECT_EQ(run({kPkeyctl, "scan", "/nonexistent"}).status, 3);
  EXPECT_EQ(run({kPkeyctl, "scan", "999999999"}).status, 3);
  EXPECT_EQ(run({kPkeyctl, "scan", "--help"}).status, 0);
}

TEST(PkeyctlRun, DenyWxRefusesThroughLibcAndRawSyscalls) {
  if (!seccomp_works()) GTEST_SKIP() << "seccomp filters cannot be installed here";
  const Result r = run({kPkeyctl, "run", "--deny-wx", "--", WX_PROBE_PATH});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out,
            "libc-mmap-rwx: EACCES\n"
            "libc-mprotect-rwx: EACCES\n"
            "syscall-mmap-rwx: EACCES\n"
            "syscall-mprotect-rwx: EACCES\n"
            "syscall-pkey_mprotect-rwx: EACCES\n" +
                std::string(int80_supported() ? "int80-mprotect-rwx: EACCES\n" : "int80-mprotect-rwx: unsupported\n"));
}

TEST(PkeyctlRun, DenyWxLetsAWellBehavedProgramRun) {
  if (!seccomp_works()) GTEST_SKIP() << "seccomp filters cannot be installed here";
  const Result r = run({kPkeyctl, "run", "--deny-wx", "--", WX_PROBE_PATH, "good"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "rw-then-rx: ok\n");
}

TEST(PkeyctlRun, LogWxAllowsAndReportsEachCall) {
  if (!seccomp_works()) GTEST_SKIP() << "seccomp filters cannot be installed here";
  const Result r = run({kPkeyctl, "run", "--log-wx", "--", WX_PROBE_PATH});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out,
            "libc-mmap-rwx: ok\n"
            "libc-mprotect-rwx: ok\n"
            "syscall-mmap-rwx: ok\n"
            "syscall-mprotect-rwx: ok\n"
            "syscall-pkey_mprotect-rwx: ok\n" +
                std::string(int80_supported() ? "int80-mprotect-rwx: ok\n" : "int80-mprotect-rwx: unsupported\n"));
  int reports = 0;
  for (std::size_t at = 0; (at = r.err.find("pkeyctl: W^X: pid ", at)) != std::string::npos; ++at) ++reports;
  EXPECT_EQ(reports, int80_supported() ? 6 : 5) << r.err;
  EXPECT_TRUE(contains(r.err, "mprotect(0x")) << r.err;
  EXPECT_TRUE(contains(r.err, "pkey_mprotect(0x")) << r.err;
  EXPECT_TRUE(contains(r.err, "PROT_READ|PROT_WRITE|PROT_EXEC)")) << r.err;
}

TEST(PkeyctlRun, ExitStatusAndUsage) {
  EXPECT_EQ(run({kPkeyctl, "run", "--", "/bin/true"}).status, 2) << "a mode is required";
  EXPECT_EQ(run({kPkeyctl, "run", "--deny-wx"}).status, 2);
  EXPECT_EQ(run({kPkeyctl, "nonsense"}).status, 2);
  EXPECT_EQ(run({kPkeyctl, "--version"}).status, 0);
  if (!seccomp_works()) GTEST_SKIP() << "seccomp filters cannot be installed here";
  EXPECT_EQ(run({kPkeyctl, "run", "--deny-wx", "--", "/bin/false"}).status, 1) << "the program's status";
  EXPECT_EQ(run({kPkeyctl, "run", "--log-wx", "--", "/nonexistent"}).status, 127);
}

TEST(PkeyctlMaps, GroupsAProcesssMappingsByKey) {
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], 1);
    ::execl(TAGGED_SLEEPER_PATH, TAGGED_SLEEPER_PATH, nullptr);
    ::_exit(127);
  }
  ::close(out[1]);
  char line[128] = {};
  ASSERT_GT(::read(out[0], line, sizeof line - 1), 0);
  ::close(out[0]);
  int key = 0;
  void* addr = nullptr;
  ASSERT_EQ(std::sscanf(line, "%d %p", &key, &addr), 2) << line;
  const Result text = run({kPkeyctl, "maps", std::to_string(pid)});
  const Result json = run({kPkeyctl, "maps", "--json", std::to_string(pid)});
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  EXPECT_EQ(text.status, 0) << text.err;
  EXPECT_EQ(json.status, 0) << json.err;
  char start[32];
  std::snprintf(start, sizeof start, "\"start\": \"%p\"", addr);
  if (contains(json.out, "\"source\": \"smaps\"")) {
    // The kernel reports keys: the tagged pages are in the key's group.
    EXPECT_TRUE(contains(json.out, "{\"key\": " + std::to_string(key) + ", \"bytes\": 8192")) << json.out;
    EXPECT_TRUE(contains(json.out, start)) << json.out;
    EXPECT_TRUE(contains(text.out, "key " + std::to_string(key) + ": 1 mapping(s), 8 KiB")) << text.out;
  } else {
    EXPECT_TRUE(contains(json.out, "\"source\": \"none\"")) << json.out;
    EXPECT_TRUE(contains(text.out, "reports no ProtectionKey")) << text.out;
  }
  EXPECT_EQ(run({kPkeyctl, "maps"}).status, 2);
  EXPECT_EQ(run({kPkeyctl, "maps", "999999999"}).status, 1);
}

#ifdef PKEYS_BENCH_PATH
TEST(PkeyctlBench, WritesAReportWithPlots) {
  char dir[] = "/tmp/pkeys-bench-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  const Result r = run({kPkeyctl, "bench", "--quick", "--bench", PKEYS_BENCH_PATH, "--out", dir});
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  for (const char* f : {"report.md", "results.json", "switch_by_size.png", "threads.png", "vkeys.png"})
    EXPECT_EQ(::access((std::string(dir) + "/" + f).c_str(), R_OK), 0) << f;
  const Result md = run({"/bin/cat", std::string(dir) + "/report.md"});
  EXPECT_TRUE(contains(md.out, "- backend: ")) << md.out;
  EXPECT_TRUE(contains(md.out, "| BM_RawMprotectToggle/pages:1 |")) << md.out;
  (void)run({"/bin/rm", "-rf", dir});
}
#endif
