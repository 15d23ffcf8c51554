// SPDX-License-Identifier: MIT
// pthread_create, interposed so that pkeys knows the process's threads
// without reading /proc on every cross-thread change (see
// backend/thread_registry.hpp): each new thread registers before the
// program's start routine runs, starting with the rights a thread outside
// any pkeys scope holds on the keys pkeys manages, and unregisters when it
// exits (returning, pthread_exit or cancellation), after its thread_local
// and thread-specific-data destructors.
//
// The shared library exports it as pthread_create@@GLIBC_2.34 and
// @GLIBC_2.2.5, so that references bound to glibc's versions (libstdc++'s
// std::thread) reach it too; real_pthread_create.cpp finds glibc's.
//
// Under ThreadSanitizer, whose own pthread_create runs first and starts
// the thread's bookkeeping inside the start routine, nothing may run before
// it: the call is passed on unchanged, and the kernel's thread count finds
// the threads.
#include <pthread.h>

#include <new>

#include "capi/real_pthread_create.hpp"
#include "core/runtime.hpp"
#include "pkeys/pkeys.h"

using pkeys::core::Runtime;

namespace {

#if !defined(__SANITIZE_THREAD__)
struct Start {
  void* (*routine)(void*);
  void* arg;
};

// The thread unregisters itself when it exits, however it ends (see
// backend/thread_registry.cpp).
void* start_thread(void* p) {
  const Start start = *static_cast<Start*>(p);
  delete static_cast<Start*>(p);
  Runtime::on_thread_start();
  return start.routine(start.arg);
}
#endif

}  // namespace

extern "C" {

PKEYS_API int pthread_create(pthread_t* thread, const pthread_attr_t* attr, void* (*routine)(void*),
                             void* arg) __THROWNL {
#if defined(__SANITIZE_THREAD__)
  return pkeys::capi::real_pthread_create(thread, attr, routine, arg);
#else
  auto* start = new (std::nothrow) Start{routine, arg};
  if (!start) return EAGAIN;
  const int r = pkeys::capi::real_pthread_create(thread, attr, start_thread, start);
  if (r != 0) delete start;
  return r;
#endif
}

// The same function for programs linked against glibc before 2.34.
PKEYS_API int pkeys_pthread_create_2_2_5(pthread_t* thread, const pthread_attr_t* attr,
                                         void* (*routine)(void*), void* arg) __THROWNL {
  return pthread_create(thread, attr, routine, arg);
}
__asm__(".symver pkeys_pthread_create_2_2_5, pthread_create@GLIBC_2.2.5");

}  // extern "C"
