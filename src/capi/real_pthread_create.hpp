// SPDX-License-Identifier: MIT
// glibc's pthread_create, behind pkeys' own (interpose_threads.cpp). One
// definition per kind of library: real_pthread_create_shared.cpp (the next
// object's, by dlsym) and real_pthread_create_static.cpp (the archive's).
#pragma once

#include <pthread.h>

namespace pkeys::capi {

int real_pthread_create(pthread_t* thread, const pthread_attr_t* attr, void* (*routine)(void*),
                        void* arg) noexcept;

}  // namespace pkeys::capi
