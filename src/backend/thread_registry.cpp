// SPDX-License-Identifier: MIT
#include "backend/thread_registry.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <mutex>

#include "arch/x86_64/cpu_features.hpp"
#include "arch/x86_64/pkru_switches.hpp"
#include "arch/x86_64/syscall.hpp"
#include "pkeys/pkru.h"

namespace pkeys::backend {
namespace {

struct Entry {
  pid_t tid;
  std::uint32_t* pkru;
  std::uint32_t pending_mask;  // changes it missed: see OtherThread
  std::uint32_t pending_bits;
};

std::mutex g_mutex;
// Dense: an exiting thread's entry is replaced by the last one.
constexpr int kMaxThreads = 32768;
Entry g_entries[kMaxThreads];
std::atomic<int> g_count{0};  // changed under the lock; read without it only to size buffers
// Threads that unregistered lately: the kernel may list them a little
// longer (pthread_join returns before the kernel lets the thread go).
constexpr unsigned kExited = 64;
pid_t g_exited[kExited];
unsigned g_exited_next = 0;
bool g_leader_exited = false;  // the main thread left by pthread_exit: a zombie the kernel still lists
// This thread's id once registered, else 0. (A raw clone that shares its
// creator's thread-local storage sees the creator's id: not its own.)
thread_local pid_t t_tid __attribute__((tls_model("initial-exec"))) = 0;

// /proc/self/task, kept open: its link count is 2 + the kernel's thread
// count. Identified by device and inode, since the program may close the
// descriptor and reuse its number.
int g_task_fd = -1;
dev_t g_task_dev = 0;
ino_t g_task_ino = 0;
alignas(8) char g_dirents[8192];

// High 32 bits: the PKRU bits pkeys manages; low 32: a new thread's values.
std::atomic<std::uint64_t> g_start_rights{0};

bool pkru_readable() noexcept {
  static const bool readable = arch::read_cpu_features().ospke;
  return readable;
}

pid_t raw_gettid() noexcept { return static_cast<pid_t>(sys::raw_syscall(SYS_gettid)); }

bool raw_fstat(int fd, struct stat* st) noexcept {
  return sys::raw_syscall(SYS_fstat, fd, reinterpret_cast<long>(st)) == 0;
}

bool task_fd_valid() noexcept {
  struct stat st;
  return g_task_fd >= 0 && raw_fstat(g_task_fd, &st) && st.st_dev == g_task_dev && st.st_ino == g_task_ino;
}

void open_task_dir() noexcept {
  const long fd = sys::raw_syscall(SYS_openat, AT_FDCWD, reinterpret_cast<long>("/proc/self/task"),
                                   O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || !raw_fstat(static_cast<int>(fd), &st)) {
    if (fd >= 0) sys::raw_syscall(SYS_close, fd);
    g_task_fd = -1;
    return;
  }
  g_task_fd = static_cast<int>(fd);
  g_task_dev = st.st_dev;
  g_task_ino = st.st_ino;
}

// The kernel's count of this process's threads, or -1 when /proc cannot
// tell (not mounted, no descriptor left, denied).
long kernel_thread_count() noexcept {
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (g_task_fd < 0) open_task_dir();
    if (g_task_fd < 0) return -1;
    struct stat st;
    if (raw_fstat(g_task_fd, &st) && st.st_dev == g_task_dev && st.st_ino == g_task_ino)
      return static_cast<long>(st.st_nlink) - 2;
    g_task_fd = -1;  // closed or reused by the program: not ours to close
  }
  return -1;
}

// Calls f(tid) for each thread /proc/self/task lists; false when it cannot
// be read.
template <class F>
bool for_each_task(F&& f) noexcept {
  if (!task_fd_valid()) open_task_dir();
  if (g_task_fd < 0 || sys::raw_syscall(SYS_lseek, g_task_fd, 0, SEEK_SET) != 0) return false;
  for (;;) {
    const long n = sys::raw_syscall(SYS_getdents64, g_task_fd, reinterpret_cast<long>(g_dirents),
                                    sizeof g_dirents);
    if (n < 0) return false;
    if (n == 0) return true;
    for (long off = 0; off < n;) {
      // struct linux_dirent64: d_ino (8), d_off (8), d_reclen (2), d_type (1), d_name
      unsigned short reclen;
      __builtin_memcpy(&reclen, g_dirents + off + 16, sizeof reclen);
      const char* name = g_dirents + off + 19;
      if (name[0] >= '0' && name[0] <= '9') {
        pid_t tid = 0;
        for (const char* c = name; *c >= '0' && *c <= '9'; ++c) tid = tid * 10 + (*c - '0');
        f(tid);
      }
      off += reclen;
    }
  }
}

int registered_index(pid_t tid) noexcept {
  for (int i = 0; i < g_count; ++i)
    if (g_entries[i].tid == tid) return i;
  return -1;
}

bool exited(pid_t tid) noexcept {
  if (g_leader_exited && tid == ::getpid()) return true;
  for (pid_t t : g_exited)
    if (t == tid) return true;
  return false;
}

// What the kernel should count if every thread were registered.
long expected_count() noexcept { return g_count + (t_tid == 0 ? 1 : 0) + (g_leader_exited ? 1 : 0); }

// A thread unregisters from a thread-specific-data destructor: those run
// for every thread that leaves by returning or pthread_exit (the main
// thread's pthread_exit included), after the C++ thread_local destructors.
// It asks for one more round, so that it runs after the program's own keys'
// destructors too (glibc runs rounds while values remain).
pthread_key_t g_exit_key;
bool g_have_exit_key = false;

void on_thread_exit(void* round) noexcept {
  if (round == reinterpret_cast<void*>(1)) {
    ::pthread_setspecific(g_exit_key, reinterpret_cast<void*>(2));
    return;
  }
  unregister_this_thread();
}

void lock_for_fork() noexcept { g_mutex.lock(); }
void unlock_after_fork() noexcept { g_mutex.unlock(); }
void reset_in_child() noexcept {
  threads_after_fork_in_child();
  g_mutex.unlock();
}

// The thread that loads pkeys registers itself; fork hooks come first, so
// that they run after the core's (prepare handlers run in reverse order
// of registration): the lock order is the core's lock, then this one.
__attribute__((constructor(101))) void init_registry() noexcept {
  ::pthread_atfork(lock_for_fork, unlock_after_fork, reset_in_child);
  g_have_exit_key = ::pthread_key_create(&g_exit_key, on_thread_exit) == 0;
  register_this_thread();
}

}  // namespace

std::mutex& threads_mutex() noexcept { return g_mutex; }

void register_this_thread() noexcept {
  if (t_tid != 0) return;
  std::lock_guard lock(g_mutex);
  // Under the lock: a change that runs after this sees the thread with the
  // rights it has now; one that ran before updated the start rights first.
  if (pkru_readable()) {
    const std::uint64_t start = g_start_rights.load(std::memory_order_acquire);
    const auto managed = static_cast<std::uint32_t>(start >> 32);
    pkeys_pkru_update(~managed, static_cast<std::uint32_t>(start) & managed);
    // The copy, exact from here on (a switch changes only its own bits).
    pkeys_thread_pkru = pkeys_rdpkru();
  }
  if (g_count == kMaxThreads) return;  // found by the kernel's count instead
  t_tid = raw_gettid();
  g_entries[g_count++] = Entry{t_tid, arch::thread_pkru_copy(), 0, 0};
  if (g_have_exit_key) ::pthread_setspecific(g_exit_key, reinterpret_cast<void*>(1));
}

void unregister_this_thread() noexcept {
  if (t_tid == 0) return;
  std::lock_guard lock(g_mutex);
  const pid_t self = t_tid;
  if (const int i = registered_index(self); i >= 0) g_entries[i] = g_entries[--g_count];
  g_exited[g_exited_next++ % kExited] = self;
  if (self == ::getpid()) g_leader_exited = true;
  t_tid = 0;
}

int other_threads_locked(pid_t self, OtherThread* out, int max, bool scan) noexcept {
  int n = 0;
  for (int i = 0; i < g_count; ++i) {
    if (g_entries[i].tid == self) continue;
    if (n == max) return -EAGAIN;
    const Entry& e = g_entries[i];
    out[n++] = OtherThread{e.tid, e.pkru, e.pending_mask, e.pending_bits};
  }
  if (!scan && !unregistered_threads_possible_locked()) return n;
  bool full = false;
  for_each_task([&](pid_t tid) {
    if (tid == self || exited(tid) || registered_index(tid) >= 0) return;
    if (n == max) {
      full = true;
      return;
    }
    out[n++] = OtherThread{tid, nullptr};
  });
  return full ? -EAGAIN : n;
}

bool unregistered_threads_possible_locked() noexcept {
  const long kernel = kernel_thread_count();
  // (A count that differs only because an exited thread lingers costs a
  // scan each time: trusting an earlier scan could hide a new thread.)
  return kernel < 0 || kernel != expected_count();
}

bool find_thread_locked(pid_t tid, OtherThread* out) noexcept {
  if (tid <= 0) return false;
  if (const int i = registered_index(tid); i >= 0) {
    const Entry& e = g_entries[i];
    *out = OtherThread{tid, e.pkru, e.pending_mask, e.pending_bits};
    return true;
  }
  if (exited(tid)) return false;
  const long kernel = kernel_thread_count();
  if (kernel >= 0 && kernel == expected_count()) return false;  // every thread is registered
  bool found = false;
  if (!for_each_task([&](pid_t t) { found |= t == tid; }))
    found = sys::raw_syscall(SYS_tgkill, ::getpid(), tid, 0) == 0;  // no /proc: ask the kernel
  if (found) *out = OtherThread{tid, nullptr};
  return found;
}

bool thread_exited_locked(pid_t tid) noexcept { return exited(tid); }

void note_missed_locked(pid_t tid, std::uint32_t mask, std::uint32_t bits) noexcept {
  if (const int i = registered_index(tid); i >= 0) {
    Entry& e = g_entries[i];
    e.pending_mask |= mask;
    e.pending_bits = (e.pending_bits & ~mask) | (bits & mask);
  }
}

void clear_missed_locked(pid_t tid) noexcept {
  if (const int i = registered_index(tid); i >= 0) g_entries[i].pending_mask = g_entries[i].pending_bits = 0;
}

pid_t registered_thread_id() noexcept { return t_tid; }

pid_t current_thread_id() noexcept { return t_tid != 0 ? t_tid : raw_gettid(); }

int registered_thread_count() noexcept { return g_count.load(std::memory_order_relaxed); }

void set_start_rights(int key, int rights) noexcept {
  const std::uint32_t bits = 3u << PKEYS_PKRU_SHIFT(key);
  std::uint64_t old = g_start_rights.load(std::memory_order_relaxed);
  std::uint64_t now;
  do {
    auto managed = static_cast<std::uint32_t>(old >> 32);
    auto values = static_cast<std::uint32_t>(old);
    if (rights < 0) {
      managed &= ~bits;
      values &= ~bits;
    } else {
      managed |= bits;
      values = pkeys_pkru_with(values, key, static_cast<unsigned>(rights));
    }
    now = (std::uint64_t{managed} << 32) | values;
  } while (!g_start_rights.compare_exchange_weak(old, now, std::memory_order_acq_rel));
}

void threads_after_fork_in_child() noexcept {
  if (task_fd_valid()) sys::raw_syscall(SYS_close, g_task_fd);  // the parent's task directory
  g_task_fd = -1;
  g_count = 0;
  for (pid_t& t : g_exited) t = 0;
  g_leader_exited = false;
  if (t_tid != 0) {
    t_tid = raw_gettid();
    g_entries[g_count++] = Entry{t_tid, arch::thread_pkru_copy(), 0, 0};
  }
}

}  // namespace pkeys::backend
