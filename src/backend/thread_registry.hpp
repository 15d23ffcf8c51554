// SPDX-License-Identifier: MIT
// The thread registry: the threads of this process that pkeys knows, each
// with the address of its PKRU copy (pkeys_thread_pkru), so that a
// cross-thread change signals only the threads whose rights differ.
//
// Threads register when they start (pkeys interposes pthread_create, see
// capi/interpose_threads.cpp) and unregister when they exit; the thread
// that loads pkeys registers itself. Threads started some other way (a raw
// clone, or before pkeys was loaded) are still found: the kernel's thread
// count (the link count of /proc/self/task, one fstat) differs from the
// registry's, and only then is /proc/self/task read. Without /proc, only
// registered threads can be found.
//
// A new thread also gets its start rights here: on the keys pkeys itself
// manages (vkey cache keys, the execute-only key), the rights a thread
// outside any scope holds, never the scope its creator was in.
//
// Everything but the start rights is guarded by threads_mutex(), which the
// handshake (thread_signal.hpp) holds while it runs. Nothing here
// allocates: the program's malloc may call mmap, which pkeys interposes.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <mutex>

namespace pkeys::backend {

// Guards the registry and serialises cross-thread changes. Lock order:
// the core's lock first, then this one.
std::mutex& threads_mutex() noexcept;

// Registration, by the thread itself (each takes threads_mutex()).
void register_this_thread() noexcept;
void unregister_this_thread() noexcept;

struct OtherThread {
  pid_t tid;
  // Its PKRU copy; null for a thread pkeys did not register (its rights
  // are unknown, so any change must reach it).
  const std::uint32_t* pkru;
  // Changes it missed (PKRU bits and their values), applied with the next
  // change that reaches it. Registered threads only.
  std::uint32_t pending_mask = 0;
  std::uint32_t pending_bits = 0;
};

// --- under threads_mutex() -----------------------------------------------
// Every thread but `self`, registered ones first. Reads /proc/self/task
// only when the kernel counts threads the registry lacks (`scan`: force
// it). Returns how many were written to `out` (at most `max`), or -EAGAIN
// when there are more.
int other_threads_locked(pid_t self, OtherThread* out, int max, bool scan = false) noexcept;
// Whether the kernel's thread count differs from the registry's (or
// cannot be read): unregistered threads may exist.
bool unregistered_threads_possible_locked() noexcept;
// Thread `tid` of this process: true and its entry, or false (no such
// thread, or one that has exited).
bool find_thread_locked(pid_t tid, OtherThread* out) noexcept;
// A registered thread missed a change of the PKRU bits `mask` to `bits`
// (which replaces any earlier missed change of them), or applied every
// change it had missed.
void note_missed_locked(pid_t tid, std::uint32_t mask, std::uint32_t bits) noexcept;
void clear_missed_locked(pid_t tid) noexcept;
// Whether `tid` was registered and has exited (a join may already have
// returned while the kernel still lists it).
bool thread_exited_locked(pid_t tid) noexcept;

// The calling thread's id if it registered itself, else 0. Signal-safe.
pid_t registered_thread_id() noexcept;
// The calling thread's id, without a system call once it registered. (Not
// for signal handlers: a raw clone may share its creator's storage.)
pid_t current_thread_id() noexcept;
// How many threads are registered, read without the lock (to size buffers).
int registered_thread_count() noexcept;

// --- start rights (lock-free) ---------------------------------------------
// Key `key` is managed by pkeys: a new thread starts with `rights` on it
// (rights < 0: no longer managed, a new thread inherits it as usual).
void set_start_rights(int key, int rights) noexcept;

// After fork, in the child: only the calling thread exists.
void threads_after_fork_in_child() noexcept;

}  // namespace pkeys::backend
