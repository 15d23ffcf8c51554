// SPDX-License-Identifier: MIT
/*
 * pkeys.h - memory protection keys as a managed process resource (C ABI).
 *
 * A protection key tags pages; each thread holds rights on every key (deny
 * access, deny write) and changes them without a system call on hardware
 * with x86 PKU. pkeys manages keys like file descriptors: allocated,
 * queried, and handed out again only when no mapped page still carries
 * them. Where the
 * hardware is missing, an emulation enforces the same rights with
 * mprotect, process-wide instead of per thread (see pkeys_capabilities).
 *
 * The five pkey_* functions have glibc's names and prototypes (see
 * <sys/mman.h>): linking with -lpkeys gives existing callers pkeys' checks
 * and its emulation. The pkeys_* functions are this library's extensions.
 *
 * Example:
 *
 *   int key = pkey_alloc(0, PKEY_DISABLE_ACCESS);
 *   char *secret = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
 *                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
 *   pkey_mprotect(secret, 4096, PROT_READ | PROT_WRITE, key);
 *   pkey_set(key, 0);                    // grant: this thread may use it
 *   memcpy(secret, "hunter2", 8);
 *   pkey_set(key, PKEY_DISABLE_ACCESS);  // any access now faults
 *   munmap(secret, 4096);
 *   pkey_free(key);                      // the number is free again
 *
 * Every function returns -1 and sets errno on failure, and then has
 * changed nothing.
 *
 * The header compiles as C99 and later (strict ISO modes included) and as
 * C++. The functions that take POSIX signal types (siginfo_t, sigjmp_buf)
 * are declared where <signal.h> and <setjmp.h> define those types: in C++,
 * and in C with POSIX enabled (the compilers' default gnu modes,
 * _POSIX_C_SOURCE >= 199309L, _XOPEN_SOURCE >= 500 or _GNU_SOURCE, defined
 * before the first #include); PKEYS_HAVE_POSIX_SIGNALS is 1 then. Strict
 * ISO C (-std=c11 alone) has no SA_SIGINFO handlers to call them from.
 */
#ifndef PKEYS_PKEYS_H
#define PKEYS_PKEYS_H

/* The version of this header; pkeys_version() gives the library's. */
#define PKEYS_VERSION_MAJOR 0
#define PKEYS_VERSION_MINOR 1
#define PKEYS_VERSION_PATCH 0

#include <setjmp.h>
#include <signal.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/cdefs.h>
#include <sys/mman.h>

#ifndef __THROW
#define __THROW
#endif

#if defined(__cplusplus) || defined(_GNU_SOURCE) || \
    (defined(_POSIX_C_SOURCE) && (_POSIX_C_SOURCE - 0) >= 199309L) || \
    (defined(_XOPEN_SOURCE) && (_XOPEN_SOURCE - 0) >= 500)
#define PKEYS_HAVE_POSIX_SIGNALS 1
#else
#define PKEYS_HAVE_POSIX_SIGNALS 0
#endif

/* Symbols the library exports; everything else in it is hidden. */
#define PKEYS_API __attribute__((visibility("default")))

#ifdef __cplusplus
extern "C" {
#endif

/* Access rights, as in <sys/mman.h>. */
#ifndef PKEY_DISABLE_ACCESS
#define PKEY_DISABLE_ACCESS 0x1
#endif
#ifndef PKEY_DISABLE_WRITE
#define PKEY_DISABLE_WRITE 0x2
#endif
/* Every valid rights value is a combination of these bits. */
#define PKEYS_RIGHTS_MASK (PKEY_DISABLE_ACCESS | PKEY_DISABLE_WRITE)

/* pkey_alloc flag: give the initial rights to every thread, not only the
 * caller. */
#define PKEYS_ALLOC_ALL_THREADS 0x40000000u
/* The flag's first name, kept as an alias; it sits in the kernel's and
 * glibc's PKEY_ namespace, so new code should use PKEYS_ALLOC_ALL_THREADS. */
#define PKEY_ALLOC_ALL_THREADS PKEYS_ALLOC_ALL_THREADS

/* Capability bits, from pkeys_capabilities(). */
#define PKEYS_CAP_HARDWARE 0x1u          /* keys enforced by the CPU (PKRU) */
#define PKEYS_CAP_PER_THREAD_RIGHTS 0x2u /* rights differ between threads */
#define PKEYS_CAP_EXECUTE_ONLY 0x4u      /* code can run from unreadable pages */
#define PKEYS_CAP_FAULT_PKEY 0x8u        /* the kernel reports the key in si_pkey */

/* --- glibc-compatible functions ------------------------------------------ */

/* Allocates the lowest free key >= 1 and gives the calling thread
 * `access_rights` on it; every other thread starts with access disabled.
 * flags: 0, or PKEY_ALLOC_ALL_THREADS to give every thread the rights (as
 * pkey_set_all; on ETIMEDOUT no key is allocated). Errors: EINVAL (flags
 * or rights), ENOSPC (no key free, or no usable backend); with
 * PKEY_ALLOC_ALL_THREADS also ETIMEDOUT, EBUSY (PKEYS_SIGNAL has another
 * handler), EAGAIN (too many threads) and ENOMEM. */
PKEYS_API int pkey_alloc(unsigned int flags, unsigned int access_rights) __THROW;

/* Frees an allocated key; afterwards no thread keeps a right to it. As
 * glibc's, it succeeds while mapped pages carry the key, as close() does
 * for a file that is still mapped: the program no longer owns the number
 * (pkey_query: EBADF), the pages stay access-disabled in every thread, and
 * the number is quarantined, never handed out again until no page carries
 * it (see pkeys_reclaim_keys). Under PKEYS_FREE_STRICT it fails with EBUSY
 * instead. Errors: EINVAL (not allocated), EBUSY (strict mode only). */
PKEYS_API int pkey_free(int pkey) __THROW;

/* mprotect that also tags the range with `pkey`: -1 keeps each page's key
 * (plain mprotect), 0 untags, others must be allocated (else EINVAL).
 * Otherwise mprotect's errors. */
PKEYS_API int pkey_mprotect(void *addr, size_t len, int prot, int pkey) __THROW;

/* Sets the calling thread's rights on an allocated key (process-wide on the
 * emulation). EINVAL: key not allocated, bad rights, or nonzero rights on
 * key 0, which guards the stack. */
PKEYS_API int pkey_set(int pkey, unsigned int access_rights) __THROW;

/* The calling thread's rights on an allocated key, or key 0. EINVAL
 * otherwise. */
PKEYS_API int pkey_get(int pkey) __THROW;

/* --- pkeys extensions ------------------------------------------------------ */

/* --- rights of other threads ---------------------------------------------
 *
 * PKRU is per-thread state only its own thread can write. pkeys reaches
 * another thread with a real-time signal (see pkeys_sync_signal): the
 * handler edits the PKRU saved in the signal frame, only the target key's
 * two bits, and sigreturn loads it, so the thread resumes with the new
 * rights. A thread that was inside one of pkeys' own switches (pkey_set,
 * pkeys::key::set, vkey begin/end) is moved back to the switch's start, so
 * the change is never lost. Only threads whose rights differ from the
 * change are signalled: pkeys knows each thread's rights as its switches
 * last set them (it interposes pthread_create to know the threads). A
 * signalled thread blocked in a system call resumes it (SA_RESTART), except
 * the calls the kernel never restarts after a handler (signal(7)), which
 * fail with EINTR: nanosleep, clock_nanosleep, poll, ppoll, select,
 * pselect, epoll_wait, epoll_pwait, sigtimedwait, sigwaitinfo, sigsuspend,
 * pause, io_getevents, semop, semtimedop, msgrcv, msgsnd, and socket calls
 * with a timeout (SO_RCVTIMEO, SO_SNDTIMEO). A thread that blocks the
 * signal, or that the kernel cannot queue it to (RLIMIT_SIGPENDING), cannot
 * be reached: the caller waits at most PKEYS_SYNC_TIMEOUT_MS (default 200)
 * and gets ETIMEDOUT; pkeys_sync_missed then lists the threads that did not
 * apply the change (they may still apply it when they unblock the signal,
 * unless a later change superseded it). Threads created while a change
 * runs are reached too. On the emulation rights are process-wide: these
 * become pkey_set. */

/* Sets thread `tid`'s rights on an allocated key and returns once it has
 * applied them. Errors: ESRCH (not a thread of this process, or one that
 * has exited), EINVAL (key or rights, or the key was freed meanwhile),
 * ETIMEDOUT, EBUSY (the program has its own handler on pkeys' signal),
 * EAGAIN (no real-time signal free). */
PKEYS_API int pkey_set_thread(pid_t tid, int pkey, unsigned int access_rights) __THROW;

/* Sets every thread's rights on an allocated key, the caller's included,
 * and returns once all have applied them. A concurrent pkey_free of the
 * same key is ordered with it: the change happens before the free, or
 * fails with EINVAL. Errors: EINVAL (key or rights), ETIMEDOUT, EBUSY (the
 * program has its own handler on pkeys' signal), EAGAIN (too many threads,
 * or no real-time signal free). */
PKEYS_API int pkey_set_all(int pkey, unsigned int access_rights) __THROW;

/* The threads that did not apply the calling thread's last pkey_set_thread,
 * pkey_set_all, PKEY_ALLOC_ALL_THREADS or pkeys_sync_threads: returns how
 * many, and copies up to `max` of their ids to `tids`. */
PKEYS_API int pkeys_sync_missed(pid_t *tids, int max) __THROW;

/* Returns once every other thread's rights are those pkeys last set for
 * it, changing nothing else: the threads pkeys did not start (raw clone,
 * or before pkeys was loaded) run pkeys' handler, and so do the threads
 * that missed an earlier change (ETIMEDOUT), which apply it now; the others
 * are not disturbed. ETIMEDOUT as above, EBUSY (the program has its own handler on
 * pkeys' signal), EAGAIN (too many threads, or no real-time signal free). */
PKEYS_API int pkeys_sync_threads(void) __THROW;

/* The real-time signal pkeys uses to reach other threads. It is chosen at
 * the first call that needs it: the PKEYS_SIGNAL environment variable if
 * set, else the highest real-time signal below SIGRTMAX that has no
 * handler then. The program must leave it to pkeys: if it installs its own
 * handler on it later, the cross-thread calls fail with EBUSY (and a
 * pkey_free that must reset the key in another thread leaves the number
 * out of use). Returns the signal (choosing it now if needed), or -1 with
 * errno EBUSY (taken over by the program), EAGAIN (every real-time signal
 * has a handler) or EINVAL (PKEYS_SIGNAL is not a real-time signal). */
#define PKEYS_HAVE_SYNC_SIGNAL 1
PKEYS_API int pkeys_sync_signal(void) __THROW;

/* --- signals --------------------------------------------------------------
 *
 * A signal handler starts with the default rights (on x86: every key but 0
 * access-disabled), and siglongjmp out of a handler keeps the handler's
 * rights (glibc bug 22396). */

/* Call first in a SA_SIGINFO handler, with its third argument: gives the
 * handler the rights of the code the signal interrupted. If the signal
 * landed inside one of pkeys' rights switches, that switch starts over
 * when the handler returns (it is idempotent), so that the thread's record
 * of its rights stays whole. Async-signal-safe. No-op on the emulation (rights are process-wide).
 * Errors: EINVAL (`ucontext` NULL), ENOTSUP (the frame holds no PKRU). */
PKEYS_API int pkeys_signal_enter(const void *ucontext) __THROW;

#if PKEYS_HAVE_POSIX_SIGNALS
/* A recovery point that also restores the thread's rights:
 *
 *   static pkeys_sigjmp_buf env;
 *   if (pkeys_sigsetjmp(env, 1) == 0) { ... code that may fault ... }
 *   else { ... back here with the rights of the pkeys_sigsetjmp call ... }
 *   // in the handler: pkeys_siglongjmp(env, 1);
 *
 * Only keys that are the same allocation as at pkeys_sigsetjmp get their
 * rights back: keys freed in between stay access-disabled, and keys
 * allocated in between (a number freed and handed to another owner
 * included) are access-disabled, never given the old owner's rights.
 * Virtual keys the thread opened in between are closed, innermost first,
 * as pkeys_vkey_end would (those open at pkeys_sigsetjmp stay open). On
 * the emulation (no PKEYS_CAP_PER_THREAD_RIGHTS) rights are process-wide
 * and the jump leaves them as they are; an emulated vkey opened in
 * between is closed only if pkeys' lock is free (the jump did not leave
 * code that holds it). */
typedef struct {
  sigjmp_buf jmp;
  unsigned long long rights;
  int vkey_depth;
} pkeys_sigjmp_buf[1];

/* Fills `env`'s rights and open vkeys (pkeys_sigsetjmp's part). */
PKEYS_API void pkeys_sigsetjmp_save_(pkeys_sigjmp_buf env) __THROW;
#define pkeys_sigsetjmp(env, savemask) (pkeys_sigsetjmp_save_(env), sigsetjmp((env)[0].jmp, (savemask)))

PKEYS_API void pkeys_siglongjmp(pkeys_sigjmp_buf env, int val) __THROW __attribute__((noreturn));
#endif /* PKEYS_HAVE_POSIX_SIGNALS */

/* The calling thread's rights on every key, and their restoration: only
 * keys that are the same allocation as at the save (freed since: stay
 * disabled; allocated since: access-disabled). Async-signal-safe. */
PKEYS_API unsigned long long pkeys_rights_save(void) __THROW;
PKEYS_API void pkeys_rights_restore(unsigned long long saved) __THROW;

/* --- diagnostics ------------------------------------------------------- */

/* Names an allocated key for fault reports and pkeyctl (at most 63 bytes
 * are kept; NULL clears). EINVAL: key not allocated. */
PKEYS_API int pkeys_set_label(int pkey, const char *label) __THROW;

/* pkeys_set_label under its first name, kept as an alias (same
 * behaviour); new code should use pkeys_set_label, the pair of
 * pkeys_get_label. */
PKEYS_API int pkey_label(int pkey, const char *label) __THROW;

/* Copies a key's label into buf (always terminated); returns its length.
 * EINVAL: key not allocated. */
PKEYS_API int pkeys_get_label(int pkey, char *buf, size_t len) __THROW;

/* enable != 0 installs a SIGSEGV handler that, for a fault caused by a
 * key, writes one report to stderr (address, access, key and label, the
 * denying rights, the tagged range, the backend), then hands the signal to
 * the handler installed before it as the kernel would have called it (its
 * sa_mask and, unless SA_NODEFER, SIGSEGV blocked during the call;
 * SA_SIGINFO or not; SA_RESETHAND: called once, then the default action),
 * or to the default action: a fault faults again and ends the process, a
 * SIGSEGV that was sent (raise, kill) is raised again and ends it. Called
 * again after the program installed a SIGSEGV handler of its own, it
 * installs pkeys' handler again in front of that one; while pkeys' is
 * installed it does nothing. enable == 0 puts the previous handler back
 * if pkeys' is still installed. Async-signal-safe inside: no malloc, no
 * stdio. 0, or -1 with errno from sigaction. */
PKEYS_API int pkeys_diagnose_faults(int enable) __THROW;

/* --- virtual keys --------------------------------------------------------
 *
 * Any number of protection domains over the hardware's 15 keys. A vkey
 * tags ranges and has process-wide rights; a thread opens it with
 * pkeys_vkey_begin(vkey, rights) (its own rights while open) and closes it
 * with pkeys_vkey_end. An open vkey holds one of a cache of hardware keys
 * that pkeys allocates itself (never a key pkey_alloc handed out; an
 * unused one is given back when pkey_alloc would fail); a cached vkey's
 * begin/end cost two register writes. When the cache is full, the least
 * recently used vkey that no thread has open is evicted: its pages are
 * retagged to key 0 with page protections enforcing its process-wide
 * rights, so protection never lapses. A vkey open in any thread is never
 * evicted; when every cached key is open, begin fails with EBUSY.
 * Cache size: PKEYS_VKEY_CACHE (default 8) or pkeys_vkey_set_cache_limit.
 *
 * Example:
 *
 *   int heap = pkeys_vkey_create(PKEY_DISABLE_ACCESS);
 *   pkeys_vkey_mprotect(arena, arena_len, PROT_READ | PROT_WRITE, heap);
 *   pkeys_vkey_begin(heap, 0);     // this thread may use the arena
 *   parse(arena);
 *   pkeys_vkey_end(heap);          // back to no access
 *
 * On the emulated backend every vkey is enforced by mprotect, and begin
 * sets its rights process-wide while any thread has it open. */

/* Creates a vkey with process-wide `access_rights`; returns its id (>= 1).
 * EINVAL bad rights, ENOSPC too many. */
PKEYS_API int pkeys_vkey_create(unsigned int access_rights) __THROW;

/* Destroys a vkey. EBUSY while open in a thread or while a mapped page
 * carries it; EINVAL not a vkey. */
PKEYS_API int pkeys_vkey_destroy(int vkey) __THROW;

/* mprotect that tags [addr, addr+len) with a vkey (0 untags, as
 * pkey_mprotect with key 0). EINVAL not a vkey; mprotect's errors. */
PKEYS_API int pkeys_vkey_mprotect(void *addr, size_t len, int prot, int vkey) __THROW;

/* Opens a vkey in the calling thread with `access_rights` (nests). EINVAL
 * (vkey, rights), EBUSY (every cached key is open elsewhere, a cache limit
 * of 0, no hardware key free, or PKEYS_SIGNAL taken), EMFILE (64 open in
 * this thread), ETIMEDOUT and EAGAIN (see pkey_set_all), ENOMEM, and
 * mprotect's errors when pages are retagged. */
PKEYS_API int pkeys_vkey_begin(int vkey, unsigned int access_rights) __THROW;

/* Closes the calling thread's innermost begin of `vkey`, restoring its
 * rights from before. EINVAL when this thread has it not open. */
PKEYS_API int pkeys_vkey_end(int vkey) __THROW;

/* Sets a vkey's process-wide rights (those outside begin/end). EBUSY while
 * a thread has it open; EINVAL not a vkey or bad rights. */
PKEYS_API int pkeys_vkey_set(int vkey, unsigned int access_rights) __THROW;

/* A vkey's process-wide rights. EINVAL not a vkey. */
PKEYS_API int pkeys_vkey_get(int vkey) __THROW;

#if PKEYS_HAVE_POSIX_SIGNALS
/* The vkey behind a SIGSEGV, or -1. Async-signal-safe. */
PKEYS_API int pkeys_vkey_fault(const siginfo_t *si) __THROW;
#endif

struct pkeys_vkey_stats {
  unsigned long long hits;       /* begins on a vkey holding a hardware key */
  unsigned long long misses;     /* begins that had to load one */
  unsigned long long evictions;  /* vkeys moved back to page protections */
  unsigned long long live;       /* vkeys in existence */
  unsigned int pinned;           /* cached vkeys open in some thread */
  unsigned int cached;           /* vkeys holding a hardware key */
  unsigned int capacity;         /* most hardware keys the cache may hold */
  unsigned int hardware_keys;    /* hardware keys it holds now */
};

/* This process's vkey cache figures. EINVAL when `out` is NULL. */
PKEYS_API int pkeys_vkey_get_stats(struct pkeys_vkey_stats *out) __THROW;

/* The most hardware keys the cache may hold (0 .. max keys - 1). EBUSY
 * when shrinking would evict a vkey that is open; ENOTSUP above 0 on the
 * emulation; EINVAL out of range or no backend. */
PKEYS_API int pkeys_vkey_set_cache_limit(int max) __THROW;

/* --- memory policy: execute-only, W^X --------------------------------- */

/* Makes [addr, addr+len) execute-only: code runs, reads and writes fault
 * in every thread (PROT_EXEC under a key of pkeys' own that every thread
 * has access-disabled). ENOTSUP on the emulation: x86 cannot run code
 * from unreadable pages without PKU, and pkeys never pretends. ENOSPC when
 * no key is free for pkeys' own key; otherwise pkey_mprotect's errors. */
PKEYS_API int pkeys_mprotect_execute_only(void *addr, size_t len) __THROW;

/* Maps `len` bytes of execute-only memory holding a copy of `code`;
 * MAP_FAILED with errno (ENOTSUP on the emulation) on failure. */
PKEYS_API void *pkeys_mmap_execute_only(const void *code, size_t len) __THROW;

/* W^X policy of pkey_mprotect, pkeys_vkey_mprotect and pkeys' region API:
 * under PKEYS_WX_DENY a protection with both PROT_WRITE and PROT_EXEC is
 * refused with EACCES; under PKEYS_WX_LOG it is allowed and reported on
 * stderr. Initially from PKEYS_WX=off|log|deny (default off). Unmodified
 * programs: `pkeyctl run --deny-wx`. */
#define PKEYS_WX_OFF 0
#define PKEYS_WX_LOG 1
#define PKEYS_WX_DENY 2
PKEYS_API int pkeys_set_wx_policy(int policy) __THROW;
PKEYS_API int pkeys_get_wx_policy(void) __THROW;

/* A JIT code region that is never writable and executable in one mapping:
 * the same memory is mapped twice, executable at `exec` and writable at
 * `write`; the write view carries a virtual key that keeps it read-only
 * except inside a write scope of the calling thread:
 *
 *   struct pkeys_code_region code;
 *   pkeys_code_region_create(&code, 65536);
 *   pkeys_code_write_begin(&code);           // this thread may write
 *   memcpy(code.write, machine_code, n);
 *   pkeys_code_write_end(&code);
 *   ((void (*)(void))code.exec)();
 *   pkeys_code_region_destroy(&code);
 *
 * On the emulation the scope opens the write view process-wide. */
struct pkeys_code_region {
  void *exec;   /* PROT_READ | PROT_EXEC view */
  void *write;  /* PROT_READ | PROT_WRITE view, write-disabled by its vkey */
  size_t size;  /* rounded up to pages */
  int vkey;
  int fd;       /* the memfd behind both views */
};
PKEYS_API int pkeys_code_region_create(struct pkeys_code_region *region, size_t size) __THROW;
PKEYS_API int pkeys_code_region_destroy(struct pkeys_code_region *region) __THROW;
PKEYS_API int pkeys_code_write_begin(const struct pkeys_code_region *region) __THROW;
PKEYS_API int pkeys_code_write_end(const struct pkeys_code_region *region) __THROW;

/* --- observability ---------------------------------------------------- */

/* One range pkeys recorded as tagged in this process. */
struct pkeys_range {
  void *start;
  size_t len;
  int pkey;  /* the key, or -1 for a virtual key's range */
  int vkey;  /* the virtual key, or 0 */
  int prot;  /* the protection the program asked for */
};

/* Copies up to `max` of the ranges pkeys has recorded as tagged (with
 * pkey_mprotect or pkeys_vkey_mprotect, and still mapped as far as pkeys
 * saw) in address order; returns how many there are. A quarantined
 * number's ranges (see pkey_free) are listed under that number. */
PKEYS_API int pkeys_get_ranges(struct pkeys_range *out, int max) __THROW;

/* --- freeing keys whose pages are still mapped ---------------------------- */

/* What pkey_free does with a key that mapped pages still carry:
 * PKEYS_FREE_QUARANTINE (the default, glibc-compatible) frees it and
 * quarantines the number; PKEYS_FREE_STRICT refuses with EBUSY and the key
 * stays allocated. Initially from PKEYS_FREE=strict|quarantine (unset or
 * empty: quarantine; any other value: strict, reported on stderr).
 * pkeys_set_free_mode fails with EINVAL for another value. */
#define PKEYS_FREE_QUARANTINE 0
#define PKEYS_FREE_STRICT 1
PKEYS_API int pkeys_set_free_mode(int mode) __THROW;
PKEYS_API int pkeys_get_free_mode(void) __THROW;

/* pkey_free in strict mode, whatever the process's mode: EBUSY while a
 * mapped page carries the key. */
PKEYS_API int pkeys_free_strict(int pkey) __THROW;

/* Hands quarantined numbers that no page carries any more back for
 * pkey_alloc, and returns how many. pkeys also does so when pkey_alloc
 * runs out of numbers and when the last recorded range of a quarantined
 * number is unmapped or retagged through pkeys; this call also finds pages
 * unmapped by raw system calls. Where the mappings cannot be read
 * (/proc), a number stays quarantined. */
PKEYS_API int pkeys_reclaim_keys(void) __THROW;

/* Fills up to `max` quarantined numbers, ascending, into `out` (may be
 * NULL with max 0) and returns how many there are. pkeys_get_ranges lists
 * the ranges that hold them, under their number. */
PKEYS_API int pkeys_get_quarantined(int *out, int max) __THROW;

/* --- queries ----------------------------------------------------------- */

/* Like pkey_get, but a key that is not allocated (any number) fails with
 * EBADF, as a closed file descriptor does. Key 0 is always allocated
 * where a backend is in use. */
PKEYS_API int pkey_query(int pkey) __THROW;

/* "x86-pku" or "emulated": the backend chosen at first use (environment
 * variable PKEYS_BACKEND = auto | x86-pku | emulated). "none" when
 * PKEYS_BACKEND asked for a backend this machine lacks, or names none. */
PKEYS_API const char *pkeys_backend(void) __THROW;

/* Why that backend was chosen, in one human-readable sentence. */
PKEYS_API const char *pkeys_backend_reason(void) __THROW;

/* PKEYS_CAP_* bits of the chosen backend. */
PKEYS_API unsigned int pkeys_capabilities(void) __THROW;

/* Number of key numbers, key 0 included (16 on x86). 0 without a backend. */
PKEYS_API int pkeys_max_keys(void) __THROW;

#if PKEYS_HAVE_POSIX_SIGNALS
/* For a SIGSEGV raised by a key's rights, the key guarding the faulting
 * address (from si_pkey on the hardware, from pkeys' records on the
 * emulation); -1 for any other signal. Async-signal-safe. */
PKEYS_API int pkeys_fault_pkey(const siginfo_t *si) __THROW;
#endif

/* The library's version, "MAJOR.MINOR.PATCH" (static storage): the
 * libpkeys the program runs with, which may be newer than the
 * PKEYS_VERSION_* it was compiled against. */
PKEYS_API const char *pkeys_version(void) __THROW;

#ifdef __cplusplus
}
#endif

#endif /* PKEYS_PKEYS_H */
