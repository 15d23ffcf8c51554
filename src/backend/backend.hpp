// SPDX-License-Identifier: MIT
// Backend: the key hardware of a platform, and nothing else. One
// self-contained unit per platform behind this interface, entered through
// this header.
//
// A backend knows key numbers, the kernel's pkey calls, the thread's rights
// word (PKRU, or a table on the emulation), rights in a signal frame,
// si_pkey, its features (backend_consts.hpp) and what fork needs. It may
// include arch/ and os/, but nothing else: no ranges, no vkeys, no /proc.
// Calls take key numbers, rights and raw address ranges; the core's
// bookkeeping never crosses this seam. What each backend must provide is
// stated as a concept (backend_concept.hpp), checked where it is defined.
//
// Every method returns 0 (or a key number) on success and -errno on
// failure, leaves the caller's errno alone, and changes nothing on failure.
// The core serialises all calls except set_rights/get_rights on a backend
// with kPerThreadRights, and those that may wait for other threads
// (release_key, set_rights_in and reclaim_keys on such a backend), which
// run without the core's lock: a backend serialises its cross-thread work
// itself (thread_signal.hpp).
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "backend/backend_consts.hpp"

namespace pkeys::backend {

// What a backend without hardware enforcement asks of its host (the core,
// which knows the pages): the backend owns this interface, the core
// implements it. Called with the core's lock held, from the backend's
// set_rights.
class PageProtections {
 public:
  // Rights of `key` are now `rights` process-wide: protect every page that
  // carries `key` so that they hold. `current`: the rights its pages hold
  // now, or -1 when unknown (mixed, undoing a failed call). 0, or the first
  // error (some pages may have changed; the backend calls again with the
  // old rights and -1 to undo).
  virtual int enforce(int key, unsigned rights, int current) noexcept = 0;

 protected:
  ~PageProtections() = default;
};

class Backend {
 public:
  virtual ~Backend() = default;
  // In pkeys' own memory (os/internal_memory.hpp), not the program's heap,
  // which the program may tag: a fault report calls the backend.
  static void* operator new(std::size_t size);
  static void operator delete(void* p, std::size_t size) noexcept;

  virtual const char* name() const noexcept = 0;
  virtual unsigned capabilities() const noexcept = 0;  // kFeatures: PKEYS_CAP_*
  virtual int max_keys() const noexcept = 0;

  // Takes the lowest free key number >= 1, giving the calling thread
  // `rights`; every other thread has access disabled. -ENOSPC when none.
  virtual int acquire_key(unsigned rights) noexcept = 0;
  // Returns a key no page carries any more. No thread keeps a right to it.
  virtual int release_key(int key) noexcept = 0;
  // Keys released while some thread could not be reset stay out of use;
  // tries again to make them free. True when one became free. May wait for
  // other threads.
  virtual bool reclaim_keys() noexcept { return false; }

  // pkey_mprotect of [addr, addr+len) with key -1 (keep the pages' keys, as
  // far as this backend can: a backend without hardware keeps none), 0 or
  // an acquired key.
  virtual int protect(std::uintptr_t addr, std::size_t len, int prot, int key) noexcept = 0;

  virtual int set_rights(int key, unsigned rights) noexcept = 0;
  virtual unsigned get_rights(int key) const noexcept = 0;
  // True when set_rights and get_rights are exactly the inline
  // register_set_rights and register_get_rights (register_rights.hpp), so
  // that the C ABI may call those without the Backend.
  virtual bool rights_in_register() const noexcept { return false; }
  // True when, besides, the CPU runs the C ABI's inline owned switch
  // (register_set_bits_if_owned, which needs ANDN).
  virtual bool owned_switch_inline() const noexcept { return false; }

  // Sets `key`'s rights in thread `tid` of this process, or with
  // kAllThreads in every thread, the caller included; returns once they
  // applied it. -ESRCH: no such thread. -ETIMEDOUT: `missed` lists who did
  // not. -EINVAL when `still_valid` (checked in step with release_key, so
  // that a change and a free of the key are ordered) says no.
  using KeyCheck = bool (*)(int key) noexcept;
  virtual int set_rights_in(pid_t tid, int key, unsigned rights, std::vector<pid_t>* missed,
                            KeyCheck still_valid) noexcept = 0;
  // Returns once every other thread has run the cross-thread handshake,
  // changing nothing. -ETIMEDOUT: `missed` lists who did not.
  virtual int sync_threads(std::vector<pid_t>* missed) noexcept;

  // The calling thread's rights on every key, packed (2 bits a key), and
  // their restoration for the keys in `keys` (bit k: key k). Signal-safe.
  // Process-wide rights (no kPerThreadRights): nothing to save.
  virtual std::uint64_t save_thread_rights() const noexcept { return 0; }
  virtual void restore_thread_rights(std::uint64_t, std::uint64_t) noexcept {}

  // In a signal handler: the rights of the code the signal interrupted on
  // `key`, and giving the handler all of them. Signal-safe. Process-wide
  // rights: the handler already has them.
  virtual unsigned interrupted_rights(const void*, int key) const noexcept { return get_rights(key); }
  virtual int adopt_interrupted_rights(const void*) noexcept { return 0; }

  // The key the hardware names for this fault (si_pkey), or -1: not a key
  // fault, or a backend that cannot tell (the core's records decide).
  // Async-signal-safe.
  virtual int fault_key(const siginfo_t&) const noexcept { return -1; }

  // Backends without hardware enforcement: where page protections are
  // asked for. Attached once, before any key exists.
  virtual void attach(PageProtections&) noexcept {}

  // A key pkeys itself manages (a vkey cache key, the execute-only key):
  // a thread starts with `rights` on it, whatever scope its creator was in
  // (rights < 0: no longer managed). Backends with process-wide rights
  // have nothing to do.
  virtual void set_start_rights(int, int) noexcept {}

  // Around fork(): take the backend's own locks (after the core's), and
  // release them in parent and child. (The handshake's lock has fork
  // hooks of its own, thread_registry.cpp.)
  virtual void prepare_fork() noexcept {}
  virtual void after_fork() noexcept {}
};

// The handshake alone, for a process with no usable backend.
int sync_threads_without_backend(std::vector<pid_t>* missed) noexcept;

// The thread registry (thread_registry.hpp), for the core's pthread_create
// hook: a thread starts, before its start routine (it unregisters itself).
void register_this_thread() noexcept;

// The signal cross-thread changes use (chosen and installed at the first
// call), or -errno: -EBUSY when the program has taken it over.
int cross_thread_signal() noexcept;

}  // namespace pkeys::backend
