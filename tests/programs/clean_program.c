// SPDX-License-Identifier: MIT
/* A freestanding ELF with no rights-changing instruction, for pkeyctl
 * scan's tests. It sleeps 30 s so that a live process can be scanned. */
#include "freestanding_start.h"
