// SPDX-License-Identifier: MIT
/* _start for the freestanding scan targets: sleep 30 s, then exit 0. */
struct pkeys_test_timespec {
  long sec, nsec;
};

static const struct pkeys_test_timespec sleep_time = {30, 0};

__attribute__((noreturn, force_align_arg_pointer)) void _start(void) {
  long r;
  __asm__ volatile("syscall" : "=a"(r) : "a"(35L), "D"(&sleep_time), "S"(0L) : "rcx", "r11", "memory"); /* nanosleep */
  __asm__ volatile("syscall" : : "a"(60L), "D"(0L) : "rcx", "r11", "memory");                  /* exit */
  __builtin_unreachable();
}
