// SPDX-License-Identifier: MIT
// libpkeys_xom.so: execute-only code for an unmodified, dynamically linked
// program (pkeyctl run --execute-only preloads it).
//
// At load (its constructor) it walks the loaded objects (dl_iterate_phdr)
// and gives each object's executable PT_LOAD segment PROT_EXEC alone. On
// x86 with PKU Linux makes such a mapping execute-only with one key of its
// own (the "execute-only key", allocated once per process, access-disabled
// in every thread's PKRU), so the whole program uses at most that one key
// and its own pkey_alloc keeps working. Objects loaded later are handled
// after each dlopen/dlmopen returns: the library interposes them. That is
// the most robust of the hooks: LD_AUDIT loads its module into a namespace
// of its own (with a libc of its own, so the SIGSEGV handler below would
// not be the program's), and a breakpoint on _dl_debug_state needs
// SIGTRAP and a writable code page. The price: objects that glibc loads by
// itself, without dlopen (NSS and iconv modules), become execute-only at
// the program's next dlopen only.
//
// What is made execute-only is the executable segment's whole pages and
// nothing else: a page it shares with another segment (no -z separate-code)
// stays readable, and an object whose .eh_frame_hdr lies inside its
// executable segment (the unwinder reads it: linked without separate code,
// or the vDSO) is left as it is.
//
// PKEYS_XOM_MODE=strict: a read of such code faults (SIGSEGV with
// SEGV_PKUERR) like any protection fault. PKEYS_XOM_MODE=learn: a SIGSEGV
// handler makes the mapping read (r-x) again, writes one line to the file
// descriptor PKEYS_XOM_REPORT_FD (pkeyctl prints it), and the read goes on;
// every other SIGSEGV goes to the program's own handler (sigaction and
// signal are interposed to keep it) or, without one, kills as it would.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#ifndef SEGV_PKUERR
#define SEGV_PKUERR 4
#endif

#define XOM_EXPORT __attribute__((visibility("default")))

enum { kMaxRanges = 1024, kNameSize = 240 };

// One object's execute-only range. Written before `count` publishes it
// (release), read by the SIGSEGV handler (acquire): no lock there.
struct Range {
  uintptr_t start, end;  // page-aligned, the pages made --x
  uintptr_t base;        // the object's load bias (offsets are from it)
  atomic_int learned;    // made r-x again (learn mode)
  atomic_int gone;       // its object was unloaded
  char name[kNameSize];
};

static struct Range ranges[kMaxRanges];
static atomic_int range_count;
static pthread_mutex_t walk_lock = PTHREAD_MUTEX_INITIALIZER;
static int learn_mode;
static int report_fd = -1;
// The pipe report_fd was at start: a program that closes it and opens
// something else under its number must not get report lines in its file.
static dev_t report_dev;
static ino_t report_ino;
static uintptr_t page_size;
// Set once the constructor has checked PKU and installed the handler: a
// dlopen from another library's constructor before ours waits for it.
static atomic_int started;

// --- small async-signal-safe output ---------------------------------------
struct Line {
  char text[768];
  size_t len;
};
static void put(struct Line* l, const char* s) {
  while (*s && l->len < sizeof l->text - 1) l->text[l->len++] = *s++;
}
static void put_hex(struct Line* l, uintptr_t v) {
  char digits[2 + 16 + 1];
  int n = 0;
  char tmp[16];
  do {
    tmp[n++] = "0123456789abcdef"[v & 15];
    v >>= 4;
  } while (v);
  digits[0] = '0', digits[1] = 'x';
  for (int i = 0; i < n; ++i) digits[2 + i] = tmp[n - 1 - i];
  digits[2 + n] = 0;
  put(l, digits);
}
static void put_dec(struct Line* l, long v) {
  char tmp[24];
  int n = 0;
  if (v < 0) { put(l, "-"); v = -v; }
  do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v);
  char out[24];
  for (int i = 0; i < n; ++i) out[i] = tmp[n - 1 - i];
  out[n] = 0;
  put(l, out);
}
static void write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    const ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    p += w, n -= (size_t)w;
  }
}
static void say(const char* what) {  // a line on stderr, from the constructor
  write_all(2, "libpkeys_xom: ", 14);
  write_all(2, what, strlen(what));
  write_all(2, "\n", 1);
}

// --- the walk -------------------------------------------------------------
static const struct Range* find_range(uintptr_t addr) {
  const int n = atomic_load_explicit(&range_count, memory_order_acquire);
  for (int i = 0; i < n; ++i)
    if (addr >= ranges[i].start && addr < ranges[i].end && !atomic_load_explicit(&ranges[i].gone, memory_order_relaxed))
      return &ranges[i];
  return NULL;
}

static uintptr_t page_down(uintptr_t a) { return a & ~(page_size - 1); }
static uintptr_t page_up(uintptr_t a) { return (a + page_size - 1) & ~(page_size - 1); }

struct Walk {
  int seen[kMaxRanges];  // ranges still loaded (for dlclose)
};

// Makes one executable segment, `text`, of an object execute-only, unless
// done before.
static void protect_segment(struct dl_phdr_info* info, const ElfW(Phdr)* text, const ElfW(Phdr)* eh,
                            struct Walk* walk) {
  const uintptr_t seg_lo = info->dlpi_addr + text->p_vaddr, seg_hi = seg_lo + text->p_memsz;
  uintptr_t start = page_down(seg_lo), end = page_up(seg_hi);
  // A first or last page that another segment shares holds that segment's
  // data: it stays readable.
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)* ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_LOAD || ph == text || ph->p_memsz == 0) continue;
    const uintptr_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
    if (lo < start + page_size && hi > start) start += page_size;
    if (end > start && lo < end && hi > end - page_size) end -= page_size;
  }
  // The unwinder reads .eh_frame_hdr (and .eh_frame beside it): inside the
  // code segment, the object is left readable.
  if (eh) {
    const uintptr_t a = info->dlpi_addr + eh->p_vaddr;
    if (a + eh->p_memsz > seg_lo && a < seg_hi) return;
  }
  if (end <= start) return;
  const int n = atomic_load_explicit(&range_count, memory_order_relaxed);
  for (int i = 0; i < n; ++i) {
    if (ranges[i].start == start && ranges[i].end == end && !atomic_load_explicit(&ranges[i].gone, memory_order_relaxed)) {
      if (walk) walk->seen[i] = 1;
      return;  // done before (and perhaps learned since: left r-x)
    }
  }
  if (n >= kMaxRanges) return;
  struct Range* r = &ranges[n];
  r->start = start, r->end = end, r->base = info->dlpi_addr;
  atomic_store_explicit(&r->learned, 0, memory_order_relaxed);
  atomic_store_explicit(&r->gone, 0, memory_order_relaxed);
  const char* name = info->dlpi_name;
  if (!name || !*name) {
    // The program itself: its path as the kernel started it.
    const ssize_t len = readlink("/proc/self/exe", r->name, kNameSize - 1);
    r->name[len > 0 ? len : 0] = 0;
    if (len <= 0) strcpy(r->name, "(the program)");
  } else {
    strncpy(r->name, name, kNameSize - 1);
    r->name[kNameSize - 1] = 0;
  }
  if (mprotect((void*)start, end - start, PROT_EXEC) != 0) return;
  if (walk) walk->seen[n] = 1;
  atomic_store_explicit(&range_count, n + 1, memory_order_release);
}

static int visit(struct dl_phdr_info* info, size_t size, void* data) {
  (void)size;
  const uintptr_t vdso = (uintptr_t)getauxval(AT_SYSINFO_EHDR);
  if (vdso && info->dlpi_addr == vdso) return 0;  // the vDSO: one segment, headers and all
  const ElfW(Phdr)* eh = NULL;
  for (int i = 0; i < info->dlpi_phnum; ++i)
    if (info->dlpi_phdr[i].p_type == PT_GNU_EH_FRAME) eh = &info->dlpi_phdr[i];
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)* ph = &info->dlpi_phdr[i];
    if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) protect_segment(info, ph, eh, data);
  }
  return 0;
}

// Makes every loaded object's code execute-only that is not yet, and marks
// the ranges of unloaded objects gone (their addresses may be reused).
static void walk_objects(void) {
  static struct Walk walk;  // under walk_lock
  pthread_mutex_lock(&walk_lock);
  memset(&walk, 0, sizeof walk);
  dl_iterate_phdr(visit, &walk);
  const int n = atomic_load_explicit(&range_count, memory_order_acquire);
  for (int i = 0; i < n; ++i)
    if (!walk.seen[i]) atomic_store_explicit(&ranges[i].gone, 1, memory_order_relaxed);
  pthread_mutex_unlock(&walk_lock);
}

// --- dlopen, dlmopen, dlclose ---------------------------------------------
typedef void* (*dlopen_fn)(const char*, int);
typedef void* (*dlmopen_fn)(Lmid_t, const char*, int);
typedef int (*dlclose_fn)(void*);
typedef int (*sigaction_fn)(int, const struct sigaction*, struct sigaction*);

// The next definition of NAME as TYPE: through a union, since ISO C has no
// conversion from dlsym's object pointer to a function pointer.
#define NEXT_SYMBOL(type, name) \
  (((union { void* object; type function; }){.object = dlsym(RTLD_NEXT, name)}).function)

XOM_EXPORT void* dlopen(const char* file, int mode) {
  static dlopen_fn real;
  if (!real) real = NEXT_SYMBOL(dlopen_fn, "dlopen");
  void* h = real ? real(file, mode) : NULL;
  if (h && atomic_load(&started)) walk_objects();
  return h;
}

XOM_EXPORT void* dlmopen(Lmid_t lmid, const char* file, int mode) {
  static dlmopen_fn real;
  if (!real) real = NEXT_SYMBOL(dlmopen_fn, "dlmopen");
  void* h = real ? real(lmid, file, mode) : NULL;
  if (h && atomic_load(&started)) walk_objects();
  return h;
}

XOM_EXPORT int dlclose(void* handle) {
  static dlclose_fn real;
  if (!real) real = NEXT_SYMBOL(dlclose_fn, "dlclose");
  const int r = real ? real(handle) : -1;
  if (atomic_load(&started)) walk_objects();
  return r;
}

// --- learn mode: the SIGSEGV handler and the program's own --------------
// The program's SIGSEGV action, two slots and an index so that the handler
// never sees one half-written; writers take action_lock.
static struct sigaction program_action[2];
static atomic_int program_slot;
static pthread_mutex_t action_lock = PTHREAD_MUTEX_INITIALIZER;
static sigaction_fn real_sigaction;

static void describe(struct Line* l, uintptr_t addr) {
  const struct Range* r = find_range(addr);
  if (!r) {  // outside execute-only code
    put_hex(l, addr);
    return;
  }
  put(l, r->name);
  put(l, "+");
  put_hex(l, addr - r->base);
}

static int report_fd_is_ours(void) {
  struct stat st;
  return report_fd >= 0 && fstat(report_fd, &st) == 0 && S_ISFIFO(st.st_mode) && st.st_dev == report_dev &&
         st.st_ino == report_ino;
}

static void learn_handler(int sig, siginfo_t* info, void* context) {
  const int saved_errno = errno;
  const uintptr_t addr = (uintptr_t)info->si_addr;
  const struct Range* r = info->si_code == SEGV_PKUERR ? find_range(addr) : NULL;
  if (r) {
    const int i = (int)(r - ranges);
    if (mprotect((void*)r->start, r->end - r->start, PROT_READ | PROT_EXEC) == 0) {
      if (atomic_exchange(&ranges[i].learned, 1) == 0 && report_fd_is_ours()) {
        const ucontext_t* uc = context;
        struct Line l = {.len = 0};
        put(&l, "xom-learn pid=");
        put_dec(&l, (long)getpid());
        put(&l, " object=");
        put(&l, r->name);
        put(&l, " offset=");
        put_hex(&l, addr - r->base);
        put(&l, " by=");
        describe(&l, (uintptr_t)uc->uc_mcontext.gregs[REG_RIP]);
        put(&l, "\n");
        write_all(report_fd, l.text, l.len);
      }
      errno = saved_errno;
      return;  // the read runs again, on readable code
    }
  }
  // Not ours: the program's handler, or the default action.
  const struct sigaction* a = &program_action[atomic_load_explicit(&program_slot, memory_order_acquire)];
  if (a->sa_handler == SIG_DFL || a->sa_handler == SIG_IGN) {
    // A fault with SIGSEGV ignored kills too: the default action, on the
    // same instruction once it runs again.
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    real_sigaction(SIGSEGV, &dfl, NULL);
    errno = saved_errno;
    return;
  }
  errno = saved_errno;
  if (a->sa_flags & SA_SIGINFO) a->sa_sigaction(sig, info, context);
  else a->sa_handler(sig);
}

static int install_handler(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = learn_handler;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  return real_sigaction(SIGSEGV, &sa, &program_action[0]);
}

XOM_EXPORT int sigaction(int sig, const struct sigaction* act, struct sigaction* old) {
  if (!real_sigaction) real_sigaction = NEXT_SYMBOL(sigaction_fn, "sigaction");
  if (!real_sigaction) {
    errno = ENOSYS;
    return -1;
  }
  if (sig != SIGSEGV || !learn_mode) return real_sigaction(sig, act, old);
  // SIGSEGV stays ours; the program's action is kept for the handler.
  pthread_mutex_lock(&action_lock);
  const int slot = atomic_load_explicit(&program_slot, memory_order_relaxed);
  if (old) *old = program_action[slot];
  if (act) {
    program_action[1 - slot] = *act;
    atomic_store_explicit(&program_slot, 1 - slot, memory_order_release);
  }
  pthread_mutex_unlock(&action_lock);
  return 0;
}

// glibc's signal() calls its internal sigaction, past the interposer.
XOM_EXPORT sighandler_t signal(int sig, sighandler_t handler) {
  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = handler;
  sa.sa_flags = SA_RESTART;  // BSD semantics, as glibc's signal()
  sigemptyset(&sa.sa_mask);
  if (sigaction(sig, &sa, &old) != 0) return SIG_ERR;
  return old.sa_handler;
}

// --- start ----------------------------------------------------------------
__attribute__((constructor)) static void xom_start(void) {
  page_size = (uintptr_t)sysconf(_SC_PAGESIZE);
  real_sigaction = NEXT_SYMBOL(sigaction_fn, "sigaction");
  const char* mode = getenv("PKEYS_XOM_MODE");
  learn_mode = !mode || strcmp(mode, "strict") != 0;
  if (mode && strcmp(mode, "strict") != 0 && strcmp(mode, "learn") != 0) {
    say("PKEYS_XOM_MODE must be strict or learn: stopping the program");
    _exit(127);
  }
  // Without PKU, PROT_EXEC alone leaves code readable: never pretend.
  const long key = syscall(SYS_pkey_alloc, 0UL, 0UL);
  if (key < 0 && errno != ENOSPC) {
    say("execute-only code needs x86 PKU, which this machine lacks (pkey_alloc failed): stopping the program");
    _exit(127);
  }
  if (key >= 0) syscall(SYS_pkey_free, key);
  const char* fd = getenv("PKEYS_XOM_REPORT_FD");
  struct stat st;
  if (fd && *fd && fstat(atoi(fd), &st) == 0 && S_ISFIFO(st.st_mode)) {
    report_fd = atoi(fd);
    report_dev = st.st_dev, report_ino = st.st_ino;
  }
  if (learn_mode && (!real_sigaction || install_handler() != 0)) {
    say("cannot install the learn-mode SIGSEGV handler: stopping the program");
    _exit(127);
  }
  atomic_store(&started, 1);
  walk_objects();
}
