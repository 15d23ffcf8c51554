// SPDX-License-Identifier: MIT
// glibc's pthread_create, behind pkeys' own (interpose_threads.cpp), in
// a static program, a dynamic one and the shared library alike.
#pragma once

#include <pthread.h>

namespace pkeys::capi {

int real_pthread_create(pthread_t* thread, const pthread_attr_t* attr, void* (*routine)(void*),
                        void* arg) noexcept;

}  // namespace pkeys::capi
