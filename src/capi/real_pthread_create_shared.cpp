// SPDX-License-Identifier: MIT
// libpkeys.so: the pthread_create of the objects loaded after this one
// (glibc's, or a sanitizer's), looked up once.
#include <dlfcn.h>

#include <atomic>
#include <cerrno>

#include "capi/real_pthread_create.hpp"

namespace pkeys::capi {
namespace {

using CreateFn = int (*)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*);
std::atomic<CreateFn> g_next{nullptr};

CreateFn next_pthread_create() noexcept {
  CreateFn f = g_next.load(std::memory_order_acquire);
  if (f) return f;
  void* p = ::dlvsym(RTLD_NEXT, "pthread_create", "GLIBC_2.34");
  if (!p) p = ::dlsym(RTLD_NEXT, "pthread_create");
  f = reinterpret_cast<CreateFn>(p);
  g_next.store(f, std::memory_order_release);
  return f;
}

}  // namespace

int real_pthread_create(pthread_t* thread, const pthread_attr_t* attr, void* (*routine)(void*),
                        void* arg) noexcept {
  const CreateFn f = next_pthread_create();
  return f ? f(thread, attr, routine, arg) : EAGAIN;
}

}  // namespace pkeys::capi
