// SPDX-License-Identifier: MIT
// JIT code regions: one memfd mapped executable and, separately, writable
// under a virtual key, so no mapping is ever writable and executable.
// Built on the public API only.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "pkeys/pkeys.h"

namespace {

int fail(int error) {
  errno = error;
  return -1;
}

}  // namespace

extern "C" {

int pkeys_code_region_create(struct pkeys_code_region* region, size_t size) __THROW {
  if (!region || size == 0) return fail(EINVAL);
  const auto page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  if (size > SIZE_MAX - page) return fail(ENOMEM);
  size = (size + page - 1) / page * page;
  const int saved_errno = errno;
  pkeys_code_region r{MAP_FAILED, MAP_FAILED, size, -1, -1};
  int error = 0;
  do {
    if ((r.fd = ::memfd_create("pkeys-code", MFD_CLOEXEC | MFD_ALLOW_SEALING)) < 0 ||
        ::ftruncate(r.fd, static_cast<off_t>(size)) != 0) {
      error = errno;
      break;
    }
    // The write view is the only writable mapping there will ever be: a
    // child of fork does not inherit it (it would share the parent's code,
    // MAP_SHARED), and once it exists the file is sealed against new
    // writable mappings, write(2) and resizing, so that neither the file
    // (which a child inherits) nor the executable view, mapped after the
    // seal (the kernel then refuses mprotect to PROT_WRITE), can make one.
    r.write = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, r.fd, 0);
    if (r.write == MAP_FAILED || ::madvise(r.write, size, MADV_DONTFORK) != 0 ||
        ::fcntl(r.fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) != 0) {
      error = errno;
      break;
    }
    r.exec = ::mmap(nullptr, size, PROT_READ | PROT_EXEC, MAP_SHARED, r.fd, 0);
    if (r.exec == MAP_FAILED) {
      error = errno;
      break;
    }
    if ((r.vkey = pkeys_vkey_create(PKEY_DISABLE_WRITE)) < 0 ||
        pkeys_vkey_mprotect(r.write, size, PROT_READ | PROT_WRITE, r.vkey) != 0)
      error = errno;
  } while (false);
  if (error != 0) {
    if (r.write != MAP_FAILED) ::munmap(r.write, size);
    if (r.exec != MAP_FAILED) ::munmap(r.exec, size);
    if (r.vkey > 0) pkeys_vkey_destroy(r.vkey);
    if (r.fd >= 0) ::close(r.fd);
    return fail(error);
  }
  *region = r;
  errno = saved_errno;
  return 0;
}

int pkeys_code_region_destroy(struct pkeys_code_region* region) __THROW {
  if (!region || region->vkey <= 0) return fail(EINVAL);
  const int saved_errno = errno;
  // EBUSY while a write scope is open, before anything is undone (setting
  // the rights it already has changes nothing).
  if (pkeys_vkey_set(region->vkey, PKEY_DISABLE_WRITE) != 0) return -1;
  ::munmap(region->write, region->size);
  ::munmap(region->exec, region->size);
  if (pkeys_vkey_destroy(region->vkey) != 0) return -1;
  ::close(region->fd);
  *region = pkeys_code_region{nullptr, nullptr, 0, -1, -1};
  errno = saved_errno;
  return 0;
}

int pkeys_code_write_begin(const struct pkeys_code_region* region) __THROW {
  if (!region) return fail(EINVAL);
  return pkeys_vkey_begin(region->vkey, 0);
}

int pkeys_code_write_end(const struct pkeys_code_region* region) __THROW {
  if (!region) return fail(EINVAL);
  return pkeys_vkey_end(region->vkey);
}

}  // extern "C"
