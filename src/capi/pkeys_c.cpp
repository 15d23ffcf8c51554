// The C ABI: a thin layer over the core Runtime.
#include "pkeys/pkeys.h"

#include <new>

#include "capi/errno_result.hpp"
#include "core/runtime.hpp"

using pkeys::capi::ErrnoResult;
using pkeys::core::Runtime;

namespace {

// The Runtime allocates; out of memory becomes ENOMEM, never an exception
// through a C caller.
template <class F>
int call(F&& f) noexcept {
  ErrnoResult result;
  try {
    return static_cast<int>(result(f(Runtime::instance())));
  } catch (const std::bad_alloc&) {
    return static_cast<int>(result(-ENOMEM));
  } catch (...) {
    return static_cast<int>(result(-EIO));
  }
}

}  // namespace

extern "C" {

int pkey_alloc(unsigned int flags, unsigned int access_rights) __THROW {
  return call([&](Runtime& rt) { return rt.alloc(flags, access_rights); });
}

int pkey_free(int pkey) __THROW {
  return call([&](Runtime& rt) { return rt.free(pkey); });
}

int pkey_mprotect(void* addr, size_t len, int prot, int pkey) __THROW {
  return call([&](Runtime& rt) { return rt.protect(addr, len, prot, pkey); });
}

int pkey_set(int pkey, unsigned int access_rights) __THROW {
  return call([&](Runtime& rt) { return rt.set(pkey, access_rights); });
}

int pkey_get(int pkey) __THROW {
  return call([&](Runtime& rt) { return rt.get(pkey); });
}

int pkey_query(int pkey) __THROW {
  return call([&](Runtime& rt) { return rt.query(pkey); });
}

const char* pkeys_backend(void) __THROW { return Runtime::instance().backend_name(); }

const char* pkeys_backend_reason(void) __THROW {
  return Runtime::instance().backend_reason().c_str();
}

unsigned int pkeys_capabilities(void) __THROW { return Runtime::instance().capabilities(); }

int pkeys_max_keys(void) __THROW { return Runtime::instance().max_keys(); }

int pkeys_fault_pkey(const siginfo_t* si) __THROW {
  const int saved_errno = errno;  // called from signal handlers
  const int key = Runtime::instance().fault_key(si);
  errno = saved_errno;
  return key;
}

}  // extern "C"
