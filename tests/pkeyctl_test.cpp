// SPDX-License-Identifier: MIT
// pkeyctl scan and pkeyctl run, as a user runs them.
#include <gtest/gtest.h>

#include <elf.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sys/personality.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

namespace {

struct Result {
  int status = -1;  // exit status, or 128 + signal
  std::string out, err;
  double seconds = 0;
};

struct Options {
  std::map<std::string, std::string> env;  // set in the child ("" value: unset)
  uid_t uid = 0;                           // nonzero: run as this user (needs root)
  int timeout_s = 120;                     // then SIGKILL: status 137, not a hung suite
  unsigned long persona = 0;               // nonzero: the child's personality(2)
  bool stderr_closed_pipe = false;         // stderr a pipe that nobody reads
  std::string signal_when;                 // once stdout holds this, send `signal`
  int signal = 0;
};

Options timeout(int seconds) {
  Options o;
  o.timeout_s = seconds;
  return o;
}
Options as_user(uid_t uid) {
  Options o;
  o.uid = uid;
  return o;
}
Options with_env(const std::string& name, const std::string& value) {
  Options o;
  o.env[name] = value;
  return o;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

const char kCannotSwitchUser[] = "test harness: setuid failed\n";

// Runs `args` (argv[0] an absolute path) and collects its output. Both
// pipes are drained together, so a chatty child cannot stall.
Result run(std::vector<std::string> args, const Options& opt = {}) {
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) return {};
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], 1);
    ::dup2(err[1], 2);
    if (opt.stderr_closed_pipe) {
      // Made here, and its reading end closed before exec: no reader, ever.
      int closed[2];
      if (::pipe(closed) != 0 || ::close(closed[0]) != 0 || ::dup2(closed[1], 2) != 2) ::_exit(126);
      ::close(closed[1]);
    }
    for (const auto& [name, value] : opt.env) {
      if (value.empty()) ::unsetenv(name.c_str());
      else ::setenv(name.c_str(), value.c_str(), 1);
    }
    if (opt.persona != 0 && ::personality(opt.persona) == -1) ::_exit(126);
    if (opt.uid != 0 && (::setgid(opt.uid) != 0 || ::setuid(opt.uid) != 0)) {
      std::fputs(kCannotSwitchUser, stderr);
      ::_exit(126);
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(out[1]);
  ::close(err[1]);
  Result r;
  pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  std::string* sinks[2] = {&r.out, &r.err};
  const auto deadline = t0 + std::chrono::seconds(opt.timeout_s);
  bool killed = false, signalled = opt.signal == 0;
  for (int open = 2; open > 0;) {
    if (!signalled && contains(r.out, opt.signal_when)) {
      ::kill(pid, opt.signal);
      signalled = true;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0 && !killed) {
      ::kill(pid, SIGKILL);
      killed = true;
    }
    if (killed && left < -std::chrono::seconds(5)) break;  // a grandchild holds the pipes
    if (::poll(fds, 2, killed ? 1000 : static_cast<int>(left.count())) < 0) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[4096];
      const ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        sinks[i]->append(buf, static_cast<std::size_t>(n));
      } else {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open;
      }
    }
  }
  for (const pollfd& f : fds)
    if (f.fd >= 0) ::close(f.fd);
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

const std::string kPkeyctl = PKEYCTL_PATH;

// A scan target running in the background (it sleeps 30 s).
struct Running {
  explicit Running(const char* path) : pid(::fork()) {
    if (pid == 0) {
      ::execl(path, path, nullptr);
      ::_exit(127);
    }
    // Ready once the exec is done: /proc/PID/exe names the target. Polled,
    // bounded, never a fixed sleep (a loaded or sanitized run is slow).
    char want[PATH_MAX], got[PATH_MAX];
    if (!::realpath(path, want)) return;
    const std::string exe = "/proc/" + std::to_string(pid) + "/exe";
    for (int i = 0; i < 2000; ++i) {
      const ssize_t n = ::readlink(exe.c_str(), got, sizeof got - 1);
      if (n > 0 && std::string(got, static_cast<std::size_t>(n)) == want) break;
      ::usleep(5000);
    }
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

// Whether this kernel has memory-deny-write-execute (Linux 6.3+).
bool kernel_has_mdwe() { return ::prctl(66 /* PR_GET_MDWE */, 0L, 0L, 0L, 0L) >= 0; }

// A minimal i386 executable that exits 1 when it runs with READ_IMPLIES_EXEC
// and 0 otherwise; with `gnu_stack`, it has a PT_GNU_STACK (not executable).
std::string i386_program(bool gnu_stack) {
  const unsigned char code[] = {
      0xb8, 0x88, 0x00, 0x00, 0x00,  // mov eax, 136 (personality)
      0xbb, 0xff, 0xff, 0xff, 0xff,  // mov ebx, 0xffffffff (query)
      0xcd, 0x80,                    // int 0x80
      0xc1, 0xe8, 0x16,              // shr eax, 22 (READ_IMPLIES_EXEC)
      0x83, 0xe0, 0x01,              // and eax, 1
      0x89, 0xc3,                    // mov ebx, eax
      0xb8, 0x01, 0x00, 0x00, 0x00,  // mov eax, 1 (exit)
      0xcd, 0x80};                   // int 0x80
  const Elf32_Half phnum = gnu_stack ? 2 : 1;
  const Elf32_Addr base = 0x08048000;
  const Elf32_Off code_at = sizeof(Elf32_Ehdr) + phnum * sizeof(Elf32_Phdr);
  Elf32_Ehdr eh{};
  std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = ELFCLASS32;
  eh.e_ident[EI_DATA] = ELFDATA2LSB;
  eh.e_ident[EI_VERSION] = EV_CURRENT;
  eh.e_type = ET_EXEC;
  eh.e_machine = EM_386;
  eh.e_version = EV_CURRENT;
  eh.e_entry = base + code_at;
  eh.e_phoff = sizeof(Elf32_Ehdr);
  eh.e_ehsize = sizeof(Elf32_Ehdr);
  eh.e_phentsize = sizeof(Elf32_Phdr);
  eh.e_phnum = phnum;
  Elf32_Phdr load{};
  load.p_type = PT_LOAD;
  load.p_vaddr = load.p_paddr = base;
  load.p_filesz = load.p_memsz = static_cast<Elf32_Word>(code_at + sizeof code);
  load.p_flags = PF_R | PF_X;
  load.p_align = 0x1000;
  Elf32_Phdr stack{};
  stack.p_type = PT_GNU_STACK;
  stack.p_flags = PF_R | PF_W;
  std::string bytes(reinterpret_cast<const char*>(&eh), sizeof eh);
  bytes.append(reinterpret_cast<const char*>(&load), sizeof load);
  if (gnu_stack) bytes.append(reinterpret_cast<const char*>(&stack), sizeof stack);
  bytes.append(reinterpret_cast<const char*>(code), sizeof code);
  return bytes;
}

bool seccomp_works() {
  static const bool works = run({kPkeyctl, "run", "--deny-wx", "--", "/bin/true"}).status == 0;
  return works;
}

// A directory of its own for a test's files, removed afterwards.
struct Scratch {
  Scratch() {
    char templ[] = "/tmp/pkeyctl-test-XXXXXX";
    path = ::mkdtemp(templ) ? templ : "";
  }
  ~Scratch() {
    if (!path.empty()) (void)run({"/bin/rm", "-rf", path});
  }
  std::string file(const std::string& name, const std::string& bytes, mode_t mode = 0644) const {
    const std::string f = path + "/" + name;
    std::ofstream(f, std::ios::binary) << bytes;
    ::chmod(f.c_str(), mode);
    return f;
  }
  std::string path;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// One line, "pkeyctl CMD: ...\n", and nothing else.
::testing::AssertionResult one_line(const Result& r, const std::string& prefix) {
  if (r.err.rfind(prefix, 0) != 0 || r.err.find('\n') != r.err.size() - 1)
    return ::testing::AssertionFailure() << "stderr is not one line starting '" << prefix << "': [" << r.err << "]";
  return ::testing::AssertionSuccess();
}

constexpr uid_t kNobody = 65534;

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

// A target that maps and unmaps executable regions all the time: a region
// read from its map may be gone when its memory is read. Such a region is
// skipped (and counted), never a failed scan.
TEST(PkeyctlScan, RegionsThatVanishDuringTheScanAreSkipped) {
  const pid_t churner = ::fork();
  ASSERT_GE(churner, 0);
  if (churner == 0) {
    // Large (read in many chunks), and the same sizes again and again, so
    // that a new region often takes the place of the one just unmapped.
    const std::size_t sizes[] = {std::size_t{16} << 20, std::size_t{1} << 20, 4096};
    for (unsigned i = 0;; ++i) {
      const std::size_t size = sizes[i % 3];
      void* p = ::mmap(nullptr, size, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) ::_exit(1);
      if (i % 2) ::mprotect(p, size, PROT_NONE);
      ::munmap(p, size);
    }
  }
  struct Killer {
    pid_t pid;
    ~Killer() {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  } killer{churner};
  int failed = 0;
  for (int i = 0; i < 80 && failed < 3; ++i) {
    const Result r = run({kPkeyctl, "scan", std::to_string(churner)}, timeout(60));
    // 0 or 1: the test program's libraries may hold XRSTORs (ld.so).
    if (r.status != 0 && r.status != 1) {
      ++failed;
      ADD_FAILURE() << "scan " << i << ": status " << r.status << ": " << r.err;
    }
  }
}

TEST(PkeyctlScan, Errors) {
  EXPECT_EQ(run({kPkeyctl, "scan"}).status, 2);
  EXPECT_EQ(run({kPkeyctl, "scan", "a", "b"}).status, 2);
  EXPECT_EQ(run({kPkeyctl, "scan", "--help"}).status, 0);
}

// Each bad target: status 2 and one line that says why; never an abort
// (134), a hang or a "clean" report.
TEST(PkeyctlScan, BadTargetsGetOneLineAndStatus2) {
  Scratch dir;
  ASSERT_FALSE(dir.path.empty());
  const std::string fifo = dir.path + "/fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const std::pair<std::string, std::string> cases[] = {
      {dir.path, dir.path + ": is a directory"},
      {"", "empty argument"},
      {"99999999999999999999", "no process 99999999999999999999"},
      {"999999999", "no process 999999999"},
      {"0", "no process 0"},
      {"/nonexistent", "/nonexistent: No such file or directory"},
      {"/dev/zero", "/dev/zero: not a regular file (a character device)"},
      {fifo, "not a regular file (a FIFO)"},
      {"/etc/hostname", "not an ELF file"},
      {"-x", "unknown option '-x'"},
  };
  for (const auto& [target, why] : cases) {
    const Result r = run({kPkeyctl, "scan", target}, timeout(10));
    EXPECT_EQ(r.status, 2) << "scan '" << target << "': " << r.err;
    EXPECT_TRUE(one_line(r, "pkeyctl scan: ")) << "scan '" << target << "'";
    EXPECT_TRUE(contains(r.err, why)) << "scan '" << target << "': " << r.err;
    EXPECT_EQ(r.out, "") << "scan '" << target << "'";
  }
}

TEST(PkeyctlScan, DevZeroIsRefusedAtOnce) {
  const Result r = run({kPkeyctl, "scan", "/dev/zero"}, timeout(3));
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_LT(r.seconds, 2.0);
}

// A file that is not a whole ELF image is an error, wherever it is cut or
// whatever points past its end.
TEST(PkeyctlScan, TruncatedOrCorruptElfIsAnError) {
  Scratch dir;
  ASSERT_FALSE(dir.path.empty());
  const std::string whole = read_file(kPkeyctl);
  ASSERT_GT(whole.size(), 20000u);
  std::vector<std::string> files = {dir.file("head5000", whole.substr(0, 5000)),
                                    dir.file("head40", whole.substr(0, 40)),
                                    dir.file("most", whole.substr(0, whole.size() - 100))};
  // Whole length, but the first executable section placed past the end.
  std::string patched = whole;
  Elf64_Ehdr eh;
  std::memcpy(&eh, patched.data(), sizeof eh);
  for (unsigned i = 0; i < eh.e_shnum; ++i) {
    Elf64_Shdr sh;
    const std::size_t at = eh.e_shoff + std::size_t{i} * sizeof sh;
    std::memcpy(&sh, patched.data() + at, sizeof sh);
    if (!(sh.sh_flags & SHF_EXECINSTR)) continue;
    sh.sh_offset = patched.size() - 16;
    std::memcpy(patched.data() + at, &sh, sizeof sh);
    break;
  }
  files.push_back(dir.file("section-past-end", patched));
  for (const std::string& f : files) {
    const Result r = run({kPkeyctl, "scan", f});
    EXPECT_EQ(r.status, 2) << f << ": " << r.out << r.err;
    EXPECT_TRUE(one_line(r, "pkeyctl scan: " + f + ": not a whole ELF file")) << f;
    EXPECT_FALSE(contains(r.out, "sequence(s)")) << f << ": " << r.out;
  }
}

TEST(PkeyctlScan, SelfScansPkeyctlsOwnProcess) {
  const Result maps = run({kPkeyctl, "maps", "self"});
  EXPECT_EQ(maps.status, 0) << maps.err;
  const Result r = run({kPkeyctl, "scan", "self"});
  // glibc's own WRPKRU (pkey_set) and XRSTORs (ld.so) may be found: 0 or 1.
  EXPECT_TRUE(r.status == 0 || r.status == 1) << r.status << r.err;
  EXPECT_TRUE(contains(r.out, "process ")) << r.out;
  EXPECT_TRUE(contains(r.out, " (self)\n")) << r.out;
  // pkeyctl's own switch, found in its memory and allowed.
  EXPECT_TRUE(contains(r.out, "WRPKRU  allowed    " + kPkeyctl + "  ")) << r.out;
  EXPECT_TRUE(contains(r.out, " outside pkeys' own switch routines\n")) << r.out;
}

TEST(PkeyctlScan, SymbolsAreDemangled) {
  const Result r = run({kPkeyctl, "scan", kPkeyctl});
  EXPECT_EQ(r.status, 0) << r.err;
  // pkeyctl's WRPKRUs sit in C++ functions (pkeys_wrpkru, or what inlined
  // it, such as pkeyctl::demo): "_Z..." in the symbol table, a signature here.
  int allowed = 0;
  for (std::size_t at = 0; (at = r.out.find("WRPKRU  allowed    .text  ", at)) != std::string::npos; ++allowed) {
    at += 26;
    const std::string symbol = r.out.substr(at, r.out.find('\n', at) - at);
    EXPECT_NE(symbol.rfind("_Z", 0), 0u) << symbol;
    EXPECT_TRUE(contains(symbol, "(") && contains(symbol, ")")) << symbol;
  }
  EXPECT_GT(allowed, 0) << r.out;
}

TEST(PkeyctlScan, AnotherUsersProcessNeedsPermission) {
  if (::geteuid() != 0) GTEST_SKIP() << "runs pkeyctl as nobody: needs root";
  // As nobody, init's memory map is not readable.
  const Result r = run({kPkeyctl, "scan", "1"}, as_user(kNobody));
  if (r.err == kCannotSwitchUser) GTEST_SKIP() << "cannot become nobody here";
  EXPECT_EQ(r.status, 2) << r.out << r.err;
  EXPECT_TRUE(one_line(r, "pkeyctl scan: cannot read /proc/1/")) << r.err;
  EXPECT_TRUE(contains(r.err, "Permission denied")) << r.err;
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
                std::string(int80_supported() ? "int80-mprotect-rwx: EACCES\nint80-old_mmap-rwx: EACCES\n"
                                              : "int80-mprotect-rwx: unsupported\nint80-old_mmap-rwx: unsupported\n"));
}

// With READ_IMPLIES_EXEC the kernel adds PROT_EXEC to every PROT_READ
// request, so mmap(PROT_READ|PROT_WRITE) would be writable and executable.
TEST(PkeyctlRun, DenyWxRefusesReadImpliesExec) {
  if (!seccomp_works()) GTEST_SKIP() << "seccomp filters cannot be installed here";
  const Result r = run({kPkeyctl, "run", "--deny-wx", "--", WX_PROBE_PATH, "rie"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "start-rie: no\n"
                   "personality-rie: EACCES\n"
                   "rie-mmap-rw: rw-p\n"
                   "personality-rie-high-bits: EACCES\n" +
                       std::string(int80_supported() ? "int80-personality-rie: EACCES\n"
                                                     : "int80-personality-rie: unsupported\n") +
                       "personality-query: ok\n");
}

// A READ_IMPLIES_EXEC pkeyctl inherited (setarch -X) is not passed on.
TEST(PkeyctlRun, DenyWxClearsAnInheritedReadImpliesExec) {
  if (!seccomp_works()) GTEST_SKIP() << "seccomp filters cannot be installed here";
  Options o;
  o.persona = READ_IMPLIES_EXEC;  // PER_LINUX (0) with it
  const Result r = run({kPkeyctl, "run", "--deny-wx", "--", WX_PROBE_PATH, "rie"}, o);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "start-rie: no\npersonality-rie: EACCES\nrie-mmap-rw: rw-p\n")) << r.out;
}

// An i386 program without PT_GNU_STACK gets READ_IMPLIES_EXEC from the
// kernel at exec, where no filter can refuse it: pkeyctl refuses to run it.
TEST(PkeyctlRun, DenyWxRefusesAProgramTheKernelWouldGiveReadImpliesExec) {
  if (!seccomp_works()) GTEST_SKIP() << "seccomp filters cannot be installed here";
  if (!int80_supported()) GTEST_SKIP() << "this kernel runs no i386 programs (int 0x80 fails)";
  Scratch dir;
  ASSERT_FALSE(dir.path.empty());
  const std::string old_style = dir.file("no-gnu-stack", i386_program(false), 0755);
  const std::string modern = dir.file("gnu-stack", i386_program(true), 0755);
  ASSERT_EQ(run({old_style}).status, 1) << "the kernel gives it READ_IMPLIES_EXEC";
  ASSERT_EQ(run({modern}).status, 0);
  const Result refused = run({kPkeyctl, "run", "--deny-wx", "--", old_style});
  EXPECT_EQ(refused.status, 126) << refused.err;
  EXPECT_TRUE(one_line(refused, "pkeyctl run: " + old_style + ": the kernel would run it with READ_IMPLIES_EXEC"))
      << refused.err;
  EXPECT_EQ(run({kPkeyctl, "run", "--deny-wx", "--", modern}).status, 0);
  // Through a script too: the kernel runs the interpreter.
  const std::string script = dir.file("script", "#!" + old_style + " -x\n", 0755);
  EXPECT_EQ(run({kPkeyctl, "run", "--deny-wx", "--", script}).status, 126);
}

// An executable stack is writable and executable from the start.
TEST(PkeyctlRun, DenyWxRefusesAProgramWithAnExecutableStack) {
  if (!seccomp_works()) GTEST_SKIP() << "seccomp filters cannot be installed here";
  ASSERT_EQ(run({WX_PROBE_EXECSTACK_PATH, "stack"}).out, "stack: rwxp\n") << "built with -z execstack";
  const Result r = run({kPkeyctl, "run", "--deny-wx", "--", WX_PROBE_EXECSTACK_PATH, "stack"});
  EXPECT_EQ(r.status, 126) << r.out << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_TRUE(one_line(r, std::string("pkeyctl run: ") + WX_PROBE_EXECSTACK_PATH + ": it asks for an executable stack"))
      << r.err;
  EXPECT_EQ(run({kPkeyctl, "run", "--deny-wx", "--", WX_PROBE_PATH, "stack"}).out, "stack: rw-p\n");
  EXPECT_EQ(run({kPkeyctl, "run", "--log-wx", "--", WX_PROBE_EXECSTACK_PATH, "stack"}).out, "stack: rwxp\n")
      << "--log-wx only reports";
}

// Where the kernel has memory-deny-write-execute (Linux 6.3+), --deny-wx
// turns it on too; --verbose says which mechanisms are active.
TEST(PkeyctlRun, DenyWxUsesTheKernelsMdweWhereItHasIt) {
  if (!seccomp_works()) GTEST_SKIP() << "seccomp filters cannot be installed here";
  const Result r = run({kPkeyctl, "run", "--deny-wx", "--verbose", "--", WX_PROBE_PATH, "mdwe"});
  EXPECT_EQ(r.status, 0) << r.err;
  if (kernel_has_mdwe()) {
    EXPECT_EQ(r.out, "mdwe: refuse-exec-gain\n") << "inherited across exec";
    EXPECT_TRUE(one_line(r, "pkeyctl run: W^X denied by: seccomp filter (x86-64, i386, x32); MDWE: yes\n")) << r.err;
  } else {
    EXPECT_EQ(r.out, "mdwe: unsupported\n");
    EXPECT_TRUE(one_line(r, "pkeyctl run: W^X denied by: seccomp filter (x86-64, i386, x32); MDWE: no (")) << r.err;
  }
  const Result quiet = run({kPkeyctl, "run", "--deny-wx", "--", WX_PROBE_PATH, "mdwe"});
  EXPECT_EQ(quiet.err, "") << "silent without --verbose";
  EXPECT_EQ(quiet.out, r.out);
  const Result log = run({kPkeyctl, "run", "--log-wx", "--verbose", "--", WX_PROBE_PATH, "mdwe"});
  EXPECT_EQ(log.out, kernel_has_mdwe() ? "mdwe: off\n" : "mdwe: unsupported\n") << "--log-wx lets everything through";
  EXPECT_TRUE(one_line(log, "pkeyctl run: W^X logged by: seccomp user notification (x86-64, i386, x32)\n"))
      << log.err;
}

// W then X is fine for the filter; the kernel's MDWE refuses making memory
// executable that was not, so there a JIT maps the same memory twice.
TEST(PkeyctlRun, DenyWxLetsAWellBehavedProgramRun) {
  if (!seccomp_works()) GTEST_SKIP() << "seccomp filters cannot be installed here";
  const Result r = run({kPkeyctl, "run", "--deny-wx", "--", WX_PROBE_PATH, "good"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, std::string(kernel_has_mdwe() ? "rw-then-rx: EACCES\n" : "rw-then-rx: ok\n") + "dual-map: ok\n");
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
                std::string(int80_supported() ? "int80-mprotect-rwx: ok\nint80-old_mmap-rwx: ok\n"
                                              : "int80-mprotect-rwx: unsupported\nint80-old_mmap-rwx: unsupported\n"));
  int reports = 0;
  for (std::size_t at = 0; (at = r.err.find("pkeyctl: W^X: pid ", at)) != std::string::npos; ++at) ++reports;
  EXPECT_EQ(reports, int80_supported() ? 7 : 5) << r.err;
  if (int80_supported()) {
    EXPECT_TRUE(contains(r.err, ": old_mmap(0x")) << r.err;
  }
  EXPECT_TRUE(contains(r.err, "mprotect(0x")) << r.err;
  EXPECT_TRUE(contains(r.err, "pkey_mprotect(0x")) << r.err;
  EXPECT_TRUE(contains(r.err, "PROT_READ|PROT_WRITE|PROT_EXEC)")) << r.err;
}

TEST(PkeyctlRun, LogWxReportsReadImpliesExec) {
  if (!seccomp_works()) GTEST_SKIP() << "seccomp filters cannot be installed here";
  const Result r = run({kPkeyctl, "run", "--log-wx", "--", WX_PROBE_PATH, "rie"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "personality-rie: ok\nrie-mmap-rw: rwxp\n")) << r.out;
  int reports = 0;
  for (std::size_t at = 0; (at = r.err.find(": personality(0x", at)) != std::string::npos; ++at) ++reports;
  EXPECT_EQ(reports, int80_supported() ? 3 : 2) << "not the query: " << r.err;
  EXPECT_TRUE(contains(r.err, "READ_IMPLIES_EXEC)")) << r.err;
}

TEST(PkeyctlRun, ExitStatusAndUsage) {
  EXPECT_EQ(run({kPkeyctl, "run", "--", "/bin/true"}).status, 2) << "a mode is required";
  EXPECT_EQ(run({kPkeyctl, "run", "--deny-wx"}).status, 2);
  EXPECT_EQ(run({kPkeyctl, "nonsense"}).status, 2);
  EXPECT_EQ(run({kPkeyctl, "--version"}).status, 0);
  const Result both = run({kPkeyctl, "run", "--deny-wx", "--log-wx", "--", "/bin/true"});
  EXPECT_EQ(both.status, 2) << "--deny-wx and --log-wx together";
  EXPECT_TRUE(contains(both.err, "--deny-wx and --log-wx exclude each other")) << both.err;
  EXPECT_EQ(run({kPkeyctl, "run", "--log-wx", "--deny-wx", "--", "/bin/true"}).status, 2);
  if (!seccomp_works()) GTEST_SKIP() << "seccomp filters cannot be installed here";
  EXPECT_EQ(run({kPkeyctl, "run", "--deny-wx", "--", "/bin/false"}).status, 1) << "the program's status";
  EXPECT_EQ(run({kPkeyctl, "run", "--log-wx", "--", "/nonexistent"}).status, 127);
}

// The program's status passes through, a signal death reads 128+N as in a
// shell, and pkeyctl's own 126/127 say the program could not run.
TEST(PkeyctlRun, PassesTheProgramsStatusThrough) {
  if (!seccomp_works()) GTEST_SKIP() << "seccomp filters cannot be installed here";
  Scratch dir;
  ASSERT_FALSE(dir.path.empty());
  const std::string not_executable = dir.file("not-executable", "#!/bin/sh\nexit 0\n", 0644);
  for (const char* mode : {"--deny-wx", "--log-wx"}) {
    EXPECT_EQ(run({kPkeyctl, "run", mode, "--", "/bin/sh", "-c", "exit 3"}).status, 3) << mode;
    EXPECT_EQ(run({kPkeyctl, "run", mode, "--", "/bin/sh", "-c", "exit 0"}).status, 0) << mode;
    EXPECT_EQ(run({kPkeyctl, "run", mode, "--", "/bin/sh", "-c", "kill -KILL $$"}).status, 128 + SIGKILL) << mode;
    EXPECT_EQ(run({kPkeyctl, "run", mode, "--", "/bin/sh", "-c", "kill -TERM $$"}).status, 128 + SIGTERM) << mode;
    const Result missing = run({kPkeyctl, "run", mode, "--", "/nonexistent/program"});
    EXPECT_EQ(missing.status, 127) << mode;
    EXPECT_TRUE(contains(missing.err, "/nonexistent/program: No such file or directory")) << missing.err;
    EXPECT_EQ(run({kPkeyctl, "run", mode, "--", "no-such-program-in-path"}).status, 127) << mode;
    const Result denied = run({kPkeyctl, "run", mode, "--", not_executable});  // no x bit: EACCES, root too
    EXPECT_EQ(denied.status, 126) << mode << ": " << denied.err;
    EXPECT_TRUE(contains(denied.err, "Permission denied")) << denied.err;
  }
}

// What wx_probe prints when every W+X call it makes succeeds.
std::string probe_all_ok() {
  return std::string(
             "libc-mmap-rwx: ok\n"
             "libc-mprotect-rwx: ok\n"
             "syscall-mmap-rwx: ok\n"
             "syscall-mprotect-rwx: ok\n"
             "syscall-pkey_mprotect-rwx: ok\n") +
         (int80_supported() ? "int80-mprotect-rwx: ok\nint80-old_mmap-rwx: ok\n"
                            : "int80-mprotect-rwx: unsupported\nint80-old_mmap-rwx: unsupported\n");
}

int count_of(const std::string& s, const std::string& part) {
  int n = 0;
  for (std::size_t at = 0; (at = s.find(part, at)) != std::string::npos; at += part.size()) ++n;
  return n;
}

// A daemon's grandchild, still running after the program pkeyctl started
// has exited, stays supervised: its W+X calls are reported and succeed
// (with no supervisor they would fail with ENOSYS).
TEST(PkeyctlRun, LogWxSupervisesAGrandchildThatOutlivesTheChild) {
  if (!seccomp_works()) GTEST_SKIP() << "seccomp filters cannot be installed here";
  // The grandchild waits until its parent is gone (exited and reaped).
  const std::string script =
      std::string("(while kill -0 $$ 2>/dev/null; do sleep 0.01; done; exec ") + WX_PROBE_PATH + ") & exit 0";
  const Result r = run({kPkeyctl, "run", "--log-wx", "--", "/bin/sh", "-c", script}, timeout(60));
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, probe_all_ok()) << r.err;
  EXPECT_EQ(count_of(r.err, "pkeyctl: W^X: pid "), int80_supported() ? 7 : 5) << r.err;
}

// A signal sent to pkeyctl reaches the program, which decides what it
// means; pkeyctl then returns the program's status.
TEST(PkeyctlRun, ForwardsTerminationSignalsToTheProgram) {
  if (!seccomp_works()) GTEST_SKIP() << "seccomp filters cannot be installed here";
  for (const char* mode : {"--log-wx", "--deny-wx"}) {
    for (const auto& [sig, name] : {std::pair{SIGTERM, "TERM"}, {SIGINT, "INT"}, {SIGHUP, "HUP"}}) {
      // Bounded (20 s), so that an unsupervised program does not linger.
      const std::string script = std::string("trap 'echo got-") + name +
                                 "; exit 7' " + name +
                                 "; echo ready; i=0; while [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done";
      Options opt = timeout(60);
      opt.signal_when = "ready\n";
      opt.signal = sig;
      const Result r = run({kPkeyctl, "run", mode, "--", "/bin/sh", "-c", script}, opt);
      EXPECT_EQ(r.status, 7) << mode << " SIG" << name << ": " << r.out << r.err;
      EXPECT_EQ(r.out, std::string("ready\ngot-") + name + "\n") << mode << " SIG" << name;
    }
  }
}

// Once the program has exited, a signal goes to the descendants pkeyctl
// adopted (the daemon it left behind).
TEST(PkeyctlRun, LogWxForwardsToAdoptedDescendantsOnceTheChildIsGone) {
  if (!seccomp_works()) GTEST_SKIP() << "seccomp filters cannot be installed here";
  const std::string script =
      "(trap 'echo got-TERM; exit 0' TERM; while kill -0 $$ 2>/dev/null; do sleep 0.01; done; echo ready; "
      "i=0; while [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done) & exit 5";
  Options opt = timeout(60);
  opt.signal_when = "ready\n";
  opt.signal = SIGTERM;
  const Result r = run({kPkeyctl, "run", "--log-wx", "--", "/bin/sh", "-c", script}, opt);
  EXPECT_EQ(r.status, 5) << "the child's status: " << r.err;
  EXPECT_EQ(r.out, "ready\ngot-TERM\n") << r.err;
}

// stderr a pipe nobody reads (`2>&1 | head -2` once head is done): the
// reports are lost, the program's calls still succeed.
TEST(PkeyctlRun, LogWxToAClosedPipeStillLetsCallsThrough) {
  if (!seccomp_works()) GTEST_SKIP() << "seccomp filters cannot be installed here";
  Options opt;
  opt.stderr_closed_pipe = true;
  const Result r = run({kPkeyctl, "run", "--log-wx", "--", WX_PROBE_PATH}, opt);
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.out, probe_all_ok());
}

TEST(PkeyctlRun, LogWxWritesToTheLogFileAsked) {
  if (!seccomp_works()) GTEST_SKIP() << "seccomp filters cannot be installed here";
  Scratch dir;
  ASSERT_FALSE(dir.path.empty());
  const std::string log = dir.path + "/wx.log";
  const Result r = run({kPkeyctl, "run", "--log-wx", "--log", log, "--", WX_PROBE_PATH});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, probe_all_ok());
  EXPECT_EQ(r.err, "") << "the reports go to the log alone";
  const std::string written = read_file(log);
  EXPECT_EQ(count_of(written, "pkeyctl: W^X: pid "), int80_supported() ? 7 : 5) << written;
  // Appended to, never truncated: a second run adds its reports.
  EXPECT_EQ(run({kPkeyctl, "run", "--log-wx", "--log", log, "--", WX_PROBE_PATH}).status, 0);
  EXPECT_EQ(count_of(read_file(log), "pkeyctl: W^X: pid "), int80_supported() ? 14 : 10);
  // The program does not inherit the log's descriptor.
  const Result fds = run({kPkeyctl, "run", "--log-wx", "--log", log, "--", "/bin/ls", "-l", "/proc/self/fd/"});
  EXPECT_FALSE(contains(fds.out, "wx.log")) << fds.out;
}

TEST(PkeyctlRun, LogOptionErrors) {
  Scratch dir;
  ASSERT_FALSE(dir.path.empty());
  const Result no_file = run({kPkeyctl, "run", "--log-wx", "--log"});
  EXPECT_EQ(no_file.status, 2) << no_file.err;
  const Result dashes = run({kPkeyctl, "run", "--log-wx", "--log", "--", "/bin/true"});
  EXPECT_EQ(dashes.status, 2) << dashes.err;
  EXPECT_TRUE(contains(dashes.err, "--log needs a FILE")) << dashes.err;
  const Result deny = run({kPkeyctl, "run", "--deny-wx", "--log", dir.path + "/log", "--", "/bin/true"});
  EXPECT_EQ(deny.status, 2) << deny.err;
  EXPECT_TRUE(contains(deny.err, "--log goes with --log-wx")) << deny.err;
  if (!seccomp_works()) GTEST_SKIP() << "seccomp filters cannot be installed here";
  // A log that cannot be opened: pkeyctl fails (125), PROGRAM never runs.
  const Result bad = run({kPkeyctl, "run", "--log-wx", "--log", dir.path + "/no/such/dir/log", "--", "/bin/echo",
                          "ran"});
  EXPECT_EQ(bad.status, 125) << bad.err;
  EXPECT_TRUE(contains(bad.err, "No such file or directory")) << bad.err;
  EXPECT_EQ(bad.out, "");
}

TEST(PkeyctlHelp, DocumentsExitStatuses) {
  const Result top = run({kPkeyctl, "--help"});
  EXPECT_EQ(top.status, 0);
  for (const char* part : {"Exit status:", "2  usage error", "1 gadgets found", "128+N", "125 pkeyctl", "126 PROGRAM",
                           "127 PROGRAM not found", "PKEYS_WX"})
    EXPECT_TRUE(contains(top.out, part)) << part << "\n" << top.out;
  for (const char* cmd : {"info", "demo", "maps", "bench", "scan", "run"}) {
    const Result r = run({kPkeyctl, cmd, "--help"});
    EXPECT_EQ(r.status, 0) << cmd;
    EXPECT_TRUE(contains(r.out, "Exit status: ")) << cmd << "\n" << r.out;
  }
}

// An unrecognised PKEYS_WX fails closed in the library (deny), info shows
// it, and the commands whose behaviour depends on it refuse to start.
TEST(PkeyctlWx, UnrecognisedPkeysWxIsAnError) {
  const Options bogus = with_env("PKEYS_WX", "bogus");
  const Result info = run({kPkeyctl, "info"}, bogus);
  EXPECT_EQ(info.status, 0) << info.err;
  EXPECT_TRUE(contains(info.out, "policy   deny\n")) << info.out;  // the library's answer
  EXPECT_TRUE(contains(info.out, "PKEYS_WX='bogus'")) << info.out;
  EXPECT_TRUE(contains(info.err, "pkeys: PKEYS_WX='bogus' is not off, log or deny")) << info.err;
  const std::vector<std::vector<std::string>> refused = {
      {kPkeyctl, "demo"}, {kPkeyctl, "bench", "--bench", "/bin/false"}, {kPkeyctl, "run", "--log-wx", "--", "/bin/true"}};
  for (auto args : refused) {
    const Result r = run(args, bogus);
    EXPECT_EQ(r.status, 2) << args[1] << ": " << r.err;
    EXPECT_TRUE(one_line(r, "pkeyctl " + args[1] + ": PKEYS_WX='bogus' is not off, log or deny")) << args[1];
  }
  for (const char* known : {"off", "log", "deny"}) {
    const Result r = run({kPkeyctl, "info"}, with_env("PKEYS_WX", known));
    EXPECT_TRUE(contains(r.out, std::string("policy   ") + known + "\n")) << known << "\n" << r.out;
  }
  EXPECT_TRUE(contains(run({kPkeyctl, "info"}, with_env("PKEYS_WX", "")).out, "policy   off\n"));
}

// What pkey_free does with a key whose pages are mapped, from PKEYS_FREE
// (unset: quarantine; a value it does not know: strict, said on stderr),
// and the numbers held back.
TEST(PkeyctlInfo, ShowsTheFreeModeAndTheQuarantine) {
  const Result plain = run({kPkeyctl, "info"}, with_env("PKEYS_FREE", ""));
  EXPECT_TRUE(contains(plain.out, "  pkey_free     quarantine: ")) << plain.out;
  EXPECT_TRUE(contains(plain.out, "  quarantined   none\n")) << plain.out;
  const Result strict = run({kPkeyctl, "info"}, with_env("PKEYS_FREE", "strict"));
  EXPECT_TRUE(contains(strict.out, "  pkey_free     strict: ")) << strict.out;
  const Result bogus = run({kPkeyctl, "info"}, with_env("PKEYS_FREE", "bogus"));
  EXPECT_EQ(bogus.status, 0) << bogus.err;
  EXPECT_TRUE(contains(bogus.out, "  pkey_free     strict: ")) << bogus.out;
  EXPECT_TRUE(contains(bogus.err, "pkeys: PKEYS_FREE='bogus' is not strict or quarantine")) << bogus.err;
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
  EXPECT_EQ(json.out.rfind("{\"pid\": " + std::to_string(pid) + ", ", 0), 0u) << "pid is a number: " << json.out;
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

TEST(PkeyctlMaps, JsonPidIsANumber) {
  const Result r = run({kPkeyctl, "maps", "--json", "self"});
  EXPECT_EQ(r.status, 0) << r.err;
  unsigned pid = 0;
  EXPECT_EQ(std::sscanf(r.out.c_str(), "{\"pid\": %u, \"source\": ", &pid), 1) << r.out;
  EXPECT_GT(pid, 0u) << r.out;
}

TEST(PkeyctlMaps, ErrorsSayWhy) {
  for (const char* pid : {"999999999", "99999999999999999999"}) {
    const Result r = run({kPkeyctl, "maps", pid});
    EXPECT_EQ(r.status, 1) << pid;
    EXPECT_TRUE(one_line(r, std::string("pkeyctl maps: no process ") + pid)) << pid;
  }
  if (::geteuid() != 0) GTEST_SKIP() << "runs pkeyctl as nobody: needs root";
  const Result r = run({kPkeyctl, "maps", "1"}, as_user(kNobody));
  if (r.err == kCannotSwitchUser) GTEST_SKIP() << "cannot become nobody here";
  EXPECT_EQ(r.status, 1) << r.out << r.err;
  EXPECT_TRUE(one_line(r, "pkeyctl maps: cannot read /proc/1/smaps: Permission denied")) << r.err;
}

TEST(PkeyctlBench, OptionsNeedValues) {
  // A value must follow: neither the end nor the next option is taken as one.
  for (std::vector<std::string> args : {std::vector<std::string>{kPkeyctl, "bench", "--out"},
                                        {kPkeyctl, "bench", "--bench", "/bin/false", "--out", "--quick"},
                                        {kPkeyctl, "bench", "--out", "/tmp/x", "--bench"}}) {
    const Result r = run(args, timeout(20));
    EXPECT_EQ(r.status, 2) << args.back() << ": " << r.err;
    EXPECT_TRUE(contains(r.err, "needs a value")) << r.err;
  }
}

#ifdef PKEYS_BENCH_PATH
// Whether gnuplot is installed (the plots need it; the report does not).
bool have_gnuplot() { return run({"/bin/sh", "-c", "command -v gnuplot"}).status == 0; }

// The report's table row for `name`, split into cells.
std::vector<std::string> row_of(const std::string& md, const std::string& name) {
  const auto at = md.find("\n| " + name + " |");
  if (at == std::string::npos) return {};
  const std::string line = md.substr(at + 1, md.find('\n', at + 1) - at - 1);
  std::vector<std::string> cells;
  for (std::size_t from = 1, bar; (bar = line.find('|', from)) != std::string::npos; from = bar + 1) {
    std::string cell = line.substr(from, bar - from);
    cell.erase(0, cell.find_first_not_of(' '));
    cell.erase(cell.find_last_not_of(' ') + 1);
    cells.push_back(cell);
  }
  return cells;
}

void check_report(const std::string& dir, const Result& r) {
  const std::string md = read_file(dir + "/report.md");
  EXPECT_TRUE(contains(md, "- backend: ")) << md;
  EXPECT_TRUE(contains(md, "3 repetitions of each case")) << md;
  EXPECT_TRUE(contains(md, "the median of the repetitions")) << md;
  // The baseline against itself, and each sized case against the same size.
  const auto base = row_of(md, "BM_RawMprotectToggle/pages:1");
  ASSERT_GE(base.size(), 4u) << md;
  EXPECT_EQ(base[2], "1.00x") << md;
  EXPECT_EQ(base[3], "BM_RawMprotectToggle/pages:1") << md;
  EXPECT_EQ(row_of(md, "BM_RawMprotectToggle64Ranges").at(2), "1.00x") << md;
  for (const char* size : {"1", "16", "256"}) {
    const auto emu = row_of(md, std::string("BM_EmulatedSwitch/pages:") + size + "/ranges:1");
    ASSERT_GE(emu.size(), 4u) << md;
    if (!contains(emu[1], "skipped")) {
      EXPECT_EQ(emu[3], std::string("BM_RawMprotectToggle/pages:") + size) << md;
    }
  }
  EXPECT_EQ(row_of(md, "BM_VKeyRandomSwitch/domains:16").at(3), "BM_RawMprotectRandomSwitch/domains:16") << md;
  // Progress: each case named on stderr as it starts.
  EXPECT_TRUE(contains(r.err, "pkeys_bench: [1/")) << r.err;
  EXPECT_TRUE(contains(r.err, "] BM_RawMprotectToggle/pages:1\n")) << r.err;
}

TEST(PkeyctlBench, WritesAReportWithPlots) {
  if (!have_gnuplot()) GTEST_SKIP() << "gnuplot is not installed (the next test runs without it)";
  Scratch dir;
  ASSERT_FALSE(dir.path.empty());
  const Result r = run({kPkeyctl, "bench", "--quick", "--bench", PKEYS_BENCH_PATH, "--out", dir.path});
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  for (const char* f : {"report.md", "results.json", "switch_by_size.png", "threads.png", "vkeys.png"})
    EXPECT_EQ(::access((dir.path + "/" + f).c_str(), R_OK), 0) << f;
  check_report(dir.path, r);
  EXPECT_TRUE(contains(read_file(dir.path + "/report.md"), "![switch cost by region size](switch_by_size.png)"));
}

TEST(PkeyctlBench, WritesTheReportWithoutGnuplot) {
  Scratch dir, empty;
  ASSERT_FALSE(dir.path.empty());
  ASSERT_FALSE(empty.path.empty());
  const Result r =
      run({kPkeyctl, "bench", "--quick", "--bench", PKEYS_BENCH_PATH, "--out", dir.path}, with_env("PATH", empty.path));
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_EQ(::access((dir.path + "/report.md").c_str(), R_OK), 0);
  EXPECT_NE(::access((dir.path + "/switch_by_size.png").c_str(), F_OK), 0);
  EXPECT_TRUE(contains(r.err, "pkeyctl bench: plots skipped: gnuplot is not installed")) << r.err;
  const std::string md = read_file(dir.path + "/report.md");
  EXPECT_TRUE(contains(md, "- plots: skipped: gnuplot is not installed")) << md;
  EXPECT_FALSE(contains(md, ".png")) << md;
  check_report(dir.path, r);
}
#endif
