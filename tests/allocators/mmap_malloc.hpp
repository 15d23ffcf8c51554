// SPDX-License-Identifier: MIT
// The test malloc of mmap_malloc.cpp: how many blocks it handed out so far.
#pragma once

long mmap_malloc_calls() noexcept;
