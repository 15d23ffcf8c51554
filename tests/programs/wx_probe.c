// SPDX-License-Identifier: MIT
/* Tries to get writable-and-executable memory through libc and through
 * raw system calls ("bad", the default), through READ_IMPLIES_EXEC ("rie"),
 * does W then X the proper ways ("good"), or says whether the kernel's
 * memory-deny-write-execute is on ("mdwe"), or shows the stack's
 * protection ("stack"); prints one line per attempt:
 * NAME: ok | ERRNO-NAME (or what it found). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef PR_GET_MDWE
#define PR_GET_MDWE 66
#endif
#ifndef PR_MDWE_REFUSE_EXEC_GAIN
#define PR_MDWE_REFUSE_EXEC_GAIN 1
#endif

static void report(const char *name, int ok) {
  printf("%s: %s\n", name, ok ? "ok" : (errno == EACCES ? "EACCES" : strerror(errno)));
}

/* The permissions column of /proc/self/maps for the mapping holding p. */
static const char *perms_of(const void *p, char perms[8]) {
  FILE *f = fopen("/proc/self/maps", "r");
  char line[512];
  strcpy(perms, "?");
  while (f && fgets(line, sizeof line, f)) {
    unsigned long lo, hi;
    if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3 && (uintptr_t)p >= lo && (uintptr_t)p < hi) break;
    strcpy(perms, "?");
  }
  if (f) fclose(f);
  return perms;
}

/* An i386 system call through int 0x80: -errno or the result. */
static long int80(long nr, long b, long c, long d) {
  long r;
  __asm__ volatile("int $0x80" : "=a"(r) : "a"(nr), "b"(b), "c"(c), "d"(d) : "memory");
  return r;
}

static int int80_works(void) { return int80(20, 0, 0, 0) > 0; /* getpid */ }

/* personality(persona) as a raw system call, undone when it took. */
static void try_personality(const char *name, unsigned long persona, int i386) {
  const unsigned long before = (unsigned long)personality(0xffffffff);
  if (i386 && !int80_works()) {
    printf("%s: unsupported\n", name);
    return;
  }
  long r = i386 ? int80(136, (long)persona, 0, 0) : syscall(SYS_personality, persona);
  if (i386 && r < 0 && r > -4096) {
    errno = (int)-r;
    r = -1;
  }
  const int took = r != -1 && (personality(0xffffffff) & READ_IMPLIES_EXEC);
  report(name, r != -1 && took);
  personality(before);
}

static int rie(void) {
  const size_t page = (size_t)sysconf(_SC_PAGESIZE);
  const unsigned long start = (unsigned long)personality(0xffffffff);
  char perms[8];
  printf("start-rie: %s\n", (start & READ_IMPLIES_EXEC) ? "yes" : "no");
  const long set = syscall(SYS_personality, start | READ_IMPLIES_EXEC);
  report("personality-rie", set != -1);
  /* With READ_IMPLIES_EXEC the kernel adds PROT_EXEC to this. */
  void *p = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) report("rie-mmap-rw", 0);
  else printf("rie-mmap-rw: %s\n", perms_of(p, perms));
  personality(start);
  try_personality("personality-rie-high-bits", (1UL << 32) | start | READ_IMPLIES_EXEC, 0);
  try_personality("int80-personality-rie", start | READ_IMPLIES_EXEC, 1);
  report("personality-query", syscall(SYS_personality, 0xffffffffUL) != -1);
  return 0;
}

/* Writes code into one mapping and runs it from another of the same memfd. */
static int dual_map(size_t page) {
  const unsigned char ret42[] = {0xb8, 0x2a, 0x00, 0x00, 0x00, 0xc3};
  const int fd = memfd_create("wx-probe", MFD_CLOEXEC);
  if (fd < 0 || ftruncate(fd, (off_t)page) != 0) return 0;
  unsigned char *w = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  void *x = mmap(NULL, page, PROT_READ | PROT_EXEC, MAP_SHARED, fd, 0);
  if (w == MAP_FAILED || x == MAP_FAILED) return 0;
  memcpy(w, ret42, sizeof ret42);
  int (*fn)(void);
  memcpy(&fn, &x, sizeof fn);
  return fn() == 42;
}

int main(int argc, char **argv) {
  const int rwx = PROT_READ | PROT_WRITE | PROT_EXEC;
  const size_t page = (size_t)sysconf(_SC_PAGESIZE);
  if (argc > 1 && strcmp(argv[1], "good") == 0) {
    unsigned char *p = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 1;
    const unsigned char ret42[] = {0xb8, 0x2a, 0x00, 0x00, 0x00, 0xc3}; /* mov eax, 42; ret */
    memcpy(p, ret42, sizeof ret42);
    int (*fn)(void);
    memcpy(&fn, &p, sizeof fn); /* object to function pointer, without -pedantic's complaint */
    const int ok = mprotect(p, page, PROT_READ | PROT_EXEC) == 0 && fn() == 42;
    report("rw-then-rx", ok);
    report("dual-map", dual_map(page));
    return 0;
  }
  if (argc > 1 && strcmp(argv[1], "rie") == 0) return rie();
  if (argc > 1 && strcmp(argv[1], "stack") == 0) {
    char perms[8];
    printf("stack: %s\n", perms_of(perms, perms));
    return 0;
  }
  if (argc > 1 && strcmp(argv[1], "mdwe") == 0) {
    const int r = prctl(PR_GET_MDWE, 0L, 0L, 0L, 0L);
    printf("mdwe: %s\n", r < 0 ? "unsupported" : (r & PR_MDWE_REFUSE_EXEC_GAIN) ? "refuse-exec-gain" : "off");
    return 0;
  }
  void *m = mmap(NULL, page, rwx, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  report("libc-mmap-rwx", m != MAP_FAILED);
  void *p = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  report("libc-mprotect-rwx", mprotect(p, page, rwx) == 0);
  long r = syscall(SYS_mmap, 0L, page, rwx, MAP_PRIVATE | MAP_ANONYMOUS, -1L, 0L);
  report("syscall-mmap-rwx", r != -1);
  report("syscall-mprotect-rwx", syscall(SYS_mprotect, p, page, rwx) == 0);
  report("syscall-pkey_mprotect-rwx", syscall(SYS_pkey_mprotect, p, page, rwx, -1) == 0);
  /* The i386 system call table, through int 0x80, on a page below 4 GiB. */
  long pid;
  __asm__ volatile("int $0x80" : "=a"(pid) : "a"(20L) : "memory"); /* getpid */
  void *low = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);
  if (pid < 0 || low == MAP_FAILED) {
    printf("int80-mprotect-rwx: unsupported\nint80-old_mmap-rwx: unsupported\n");
  } else {
    long r32;
    __asm__ volatile("int $0x80" : "=a"(r32) : "a"(125L), "b"(low), "c"(page), "d"((long)rwx) : "memory");
    if (r32 < 0) errno = (int)-r32;
    report("int80-mprotect-rwx", r32 == 0);
    /* old_mmap (90) takes a pointer to its six arguments, so a filter sees
     * an address where the protection would be; edx, where mmap2's
     * protection is, holds 0. */
    unsigned int *args = (unsigned int *)low + 16;
    const unsigned int old_mmap_args[6] = {0, (unsigned int)page, (unsigned int)rwx,
                                           MAP_PRIVATE | MAP_ANONYMOUS, (unsigned int)-1, 0};
    memcpy(args, old_mmap_args, sizeof old_mmap_args);
    r32 = int80(90, (long)(uintptr_t)args, 0, 0);
    if (r32 < 0 && r32 > -4096) errno = (int)-r32;
    report("int80-old_mmap-rwx", r32 >= 0 || r32 <= -4096);
  }
  return 0;
}
