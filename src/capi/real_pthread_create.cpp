// SPDX-License-Identifier: MIT
#include "capi/real_pthread_create.hpp"

#include <dlfcn.h>
#include <threads.h>

#include <atomic>
#include <cerrno>

// Linked statically into a static program, glibc's archive gives
// pthread_create as a weak alias of __pthread_create_2_1, which pkeys' own
// pthread_create replaces; the function itself is there only if something
// pulls its object in: thrd_create does (it calls it). Everywhere else
// (libpkeys.so, or libpkeys.a in a dynamic program) the name is not
// exported and the weak reference stays null: the next object's
// pthread_create is looked up instead.
extern "C" int __pthread_create_2_1(pthread_t* thread, const pthread_attr_t* attr, void* (*routine)(void*),
                                    void* arg) __attribute__((weak));
[[gnu::used]] static const void* const keep_glibc_pthread_create = reinterpret_cast<const void*>(&::thrd_create);

namespace pkeys::capi {
namespace {

using CreateFn = int (*)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*);
std::atomic<CreateFn> g_real{nullptr};

CreateFn find_real() noexcept {
  if (__pthread_create_2_1) return __pthread_create_2_1;
  void* p = ::dlvsym(RTLD_NEXT, "pthread_create", "GLIBC_2.34");
  if (!p) p = ::dlsym(RTLD_NEXT, "pthread_create");
  return reinterpret_cast<CreateFn>(p);
}

}  // namespace

int real_pthread_create(pthread_t* thread, const pthread_attr_t* attr, void* (*routine)(void*),
                        void* arg) noexcept {
  CreateFn f = g_real.load(std::memory_order_acquire);
  if (!f) {
    f = find_real();
    g_real.store(f, std::memory_order_release);
  }
  return f ? f(thread, attr, routine, arg) : EAGAIN;
}

}  // namespace pkeys::capi
