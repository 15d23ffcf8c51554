// SPDX-License-Identifier: MIT
/* Tries to get writable-and-executable memory through libc and through
 * raw system calls ("bad"), or does W then X the proper way ("good");
 * prints one line per attempt: NAME: ok | ERRNO-NAME. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static void report(const char *name, int ok) {
  printf("%s: %s\n", name, ok ? "ok" : (errno == EACCES ? "EACCES" : strerror(errno)));
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
    printf("int80-mprotect-rwx: unsupported\n");
  } else {
    long r32;
    __asm__ volatile("int $0x80" : "=a"(r32) : "a"(125L), "b"(low), "c"(page), "d"((long)rwx) : "memory");
    if (r32 < 0) errno = (int)-r32;
    report("int80-mprotect-rwx", r32 == 0);
  }
  return 0;
}
