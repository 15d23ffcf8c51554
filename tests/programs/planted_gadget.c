// SPDX-License-Identifier: MIT
/* A freestanding ELF (no libc, whose own code holds XRSTORs) with a WRPKRU
 * and an XRSTOR planted in functions that are never called, for pkeyctl
 * scan's tests. It sleeps 30 s so that a live process can be scanned. */
__attribute__((used, noinline)) void planted_wrpkru(void) { __asm__ volatile(".byte 0x0f, 0x01, 0xef"); }
__attribute__((used, noinline)) void planted_xrstor(void) { __asm__ volatile(".byte 0x0f, 0xae, 0x28"); }

#include "freestanding_start.h"
