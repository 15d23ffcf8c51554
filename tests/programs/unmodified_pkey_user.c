// SPDX-License-Identifier: MIT
// A program built against glibc alone (no pkeys header, not linked with
// libpkeys) that uses protection keys the glibc way: direct calls and
// functions found with dlsym. Run with LD_PRELOAD=libpkeys.so, every call
// must reach libpkeys: exit 0. Exit 1 names the call that did not (run
// without the preload, it says glibc); 2 is a failed check of the result.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

// ISO C has no cast between function and object pointers; POSIX (dlsym,
// dladdr) needs both, so the bytes are copied.
typedef void (*any_fn)(void);
static void* object_of(any_fn fn) {
  void* p;
  memcpy(&p, &fn, sizeof p);
  return p;
}

static int from_libpkeys(const char* what, void* fn) {
  Dl_info info;
  if (!fn || !dladdr(fn, &info) || !info.dli_fname || !strstr(info.dli_fname, "libpkeys")) {
    printf("%s: not libpkeys' (%s)\n", what, fn && dladdr(fn, &info) && info.dli_fname ? info.dli_fname : "?");
    return 0;
  }
  return 1;
}

#define CHECK(cond)                                          \
  do {                                                       \
    if (!(cond)) {                                           \
      printf("failed: %s (errno %s)\n", #cond, strerror(errno)); \
      return 2;                                              \
    }                                                        \
  } while (0)

int main(void) {
  void* alloc_sym = dlsym(RTLD_DEFAULT, "pkey_alloc");
  void* get_sym = dlsym(RTLD_DEFAULT, "pkey_get");
  if (!from_libpkeys("pkey_alloc", object_of((any_fn)pkey_alloc)) ||
      !from_libpkeys("pkey_set", object_of((any_fn)pkey_set)) ||
      !from_libpkeys("pkey_mprotect", object_of((any_fn)pkey_mprotect)) ||
      !from_libpkeys("pkey_free", object_of((any_fn)pkey_free)) ||
      !from_libpkeys("mmap", object_of((any_fn)mmap)) || !from_libpkeys("dlsym pkey_alloc", alloc_sym) ||
      !from_libpkeys("dlsym pkey_get", get_sym))
    return 1;
  int (*found_alloc)(unsigned, unsigned);
  int (*found_get)(int);
  memcpy(&found_alloc, &alloc_sym, sizeof alloc_sym);
  memcpy(&found_get, &get_sym, sizeof get_sym);

  // pkeys' keys, on this machine's backend (glibc's fail without PKU).
  const int key = found_alloc(0, 0);
  CHECK(key > 0);
  const long page = sysconf(_SC_PAGESIZE);
  char* p = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  CHECK(p != MAP_FAILED);
  CHECK(pkey_mprotect(p, (size_t)page, PROT_READ | PROT_WRITE, key) == 0);
  CHECK(pkey_set(key, PKEY_DISABLE_WRITE) == 0);
  CHECK(found_get(key) == PKEY_DISABLE_WRITE);
  // pkeys' checks, which glibc's pkey_get lacks: a key nobody allocated.
  const int unallocated = key == 15 ? 14 : 15;
  errno = 0;
  CHECK(found_get(unallocated) == -1 && errno == EINVAL);
  CHECK(pkey_set(key, 0) == 0);
  p[0] = 1;
  CHECK(munmap(p, (size_t)page) == 0);
  CHECK(pkey_free(key) == 0);
  printf("every call reached libpkeys (key %d)\n", key);
  return 0;
}
