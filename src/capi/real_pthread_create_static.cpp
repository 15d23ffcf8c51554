// SPDX-License-Identifier: MIT
// libpkeys.a: glibc's archive defines pthread_create as a weak alias of
// __pthread_create_2_1, which pkeys' strong pthread_create replaces; the
// function itself is still there.
#include "capi/real_pthread_create.hpp"

extern "C" int __pthread_create_2_1(pthread_t* thread, const pthread_attr_t* attr, void* (*routine)(void*),
                                    void* arg);

namespace pkeys::capi {

int real_pthread_create(pthread_t* thread, const pthread_attr_t* attr, void* (*routine)(void*),
                        void* arg) noexcept {
  return __pthread_create_2_1(thread, attr, routine, arg);
}

}  // namespace pkeys::capi
