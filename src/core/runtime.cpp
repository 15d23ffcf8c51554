// SPDX-License-Identifier: MIT
#include "core/runtime.hpp"

#include <pthread.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include <bit>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <new>

#include "arch/arch.hpp"
#include "backend/register_rights.hpp"
#include "backend/select.hpp"
#include "os/internal_memory.hpp"
#include "os/pages.hpp"
#include "os/proc_maps.hpp"
#include "pkeys/pkeys.h"

namespace pkeys::core {

constinit std::atomic<Runtime*> Runtime::constructed_{nullptr};

Runtime::Runtime(std::unique_ptr<backend::Backend> backend, std::string reason)
    : backend_(std::move(backend)), reason_(std::move(reason)), space_(backend_.get()) {
  if (!backend_) return;
  keys_.set_per_thread_rights((backend_->capabilities() & backend::kPerThreadRights) != 0);
  keys_.set_register_rights(backend_->rights_in_register(), backend_->owned_switch_inline());
  vkeys_.emplace(*backend_, space_);
  space_.attach_vkeys(*vkeys_);
  backend_->attach(space_);
}

// A child must not start with a lock some other thread held: take them in
// the order every caller does (the address space's, then the backend's).
// (The handshake's lock has hooks of its own that run after these in
// prepare and before them after fork: see backend/thread_registry.cpp.)
void Runtime::prepare_fork() noexcept {
  Runtime& rt = instance();
  rt.space_.lock();
  if (rt.backend_) rt.backend_->prepare_fork();
}

void Runtime::after_fork() noexcept {
  Runtime& rt = instance();
  if (rt.backend_) rt.backend_->after_fork();
  rt.space_.unlock();
}

void Runtime::after_fork_in_child() noexcept {
  Runtime& rt = instance();
  if (rt.vkeys_) rt.vkeys_->after_fork_in_child_locked();  // the other threads are gone
  after_fork();
}

Runtime* Runtime::create() {
  backend::Selection s = backend::select_backend();
  // In pkeys' own memory, not the program's heap, which it may tag; never
  // destroyed: in use until the last exit handler.
  static_assert(alignof(Runtime) <= 4096);
  void* memory = os::internal_allocate(sizeof(Runtime));
  if (!memory) throw std::bad_alloc();
  auto* r = new (memory) Runtime(std::move(s.backend), std::move(s.reason));
  ::pthread_atfork(prepare_fork, after_fork, after_fork_in_child);
  constructed_.store(r, std::memory_order_release);
  return r;
}

Runtime& Runtime::instance() {
  static Runtime* runtime = create();
  return *runtime;
}

namespace {

// For a change that must be ordered with a free of the same key.
bool key_still_allocated(int key) noexcept { return g_key_table.is_allocated(key); }

}  // namespace

int Runtime::alloc(unsigned flags, unsigned rights) {
  if ((flags & ~kAllocAllThreads) != 0 || !valid_rights(rights)) return -EINVAL;
  if (!backend_) return -ENOSPC;
  const bool all_threads = (flags & kAllocAllThreads) != 0;
  // With per-thread rights, giving every thread the rights waits for them:
  // never under the lock every other call needs.
  const bool wait_unlocked = keys_.per_thread_rights();
  int key;
  for (bool quarantine_checked = false, reclaimed = false;;) {
    {
      std::lock_guard lock(space_);
      key = keys_.acquire_locked(*backend_, *vkeys_, rights);
      if (key >= 0 && all_threads && !wait_unlocked) {
        if (int r = backend_->set_rights_in(backend::kAllThreads, key, rights, &last_missed(), nullptr); r < 0) {
          backend_->release_key(key);  // all threads or none
          return r;
        }
      }
      if (key >= 0 && (!all_threads || !wait_unlocked)) {
        keys_.publish_locked(key);
        return key;
      }
    }
    if (key != -ENOSPC) break;
    // Quarantined numbers whose pages are gone (a raw munmap pkeys did not
    // see): the number is only looked for once all are taken.
    if (!quarantine_checked) {
      quarantine_checked = true;
      if (keys_.quarantined_mask() != 0 && end_quarantines(keys_.quarantined_mask()) > 0) continue;
    }
    // Numbers some thread could not be reset on: try again, unlocked.
    if (reclaimed || !backend_->reclaim_keys()) break;
    reclaimed = true;
  }
  if (key < 0) return key;
  // Not the program's yet: nothing else can use the number meanwhile.
  if (int r = backend_->set_rights_in(backend::kAllThreads, key, rights, &last_missed(), nullptr); r < 0) {
    backend_->release_key(key);  // all threads or none
    return r;
  }
  std::lock_guard lock(space_);
  keys_.publish_locked(key);
  return key;
}

int Runtime::free(int key, bool strict) {
  if (key <= 0 || !keys_.is_allocated(key)) return -EINVAL;
  const bool per_thread = keys_.per_thread_rights();
  bool quarantine = false;
  {
    std::lock_guard lock(space_);
    if (!keys_.is_allocated(key)) return -EINVAL;  // lost a race with another free
    if (!space_.key_in_use_locked(key)) {
      space_.forget_locked(Tag::key(key));  // may throw, before the key changes
      keys_.unpublish_locked(key);
      if (!per_thread) return backend_->release_key(key);
    } else if (strict) {
      return -EBUSY;
    } else if (!per_thread) {
      // Pages still carry it: no thread keeps a right to them, and the
      // backend keeps the number. Process-wide rights are the pages'
      // protections: changed first, so that a failure changes nothing.
      if (int r = backend_->set_rights(key, PKEY_DISABLE_ACCESS); r < 0) return r;
      keys_.unpublish_locked(key);
      keys_.quarantine_locked(key);
      return 0;
    } else {
      keys_.unpublish_locked(key);
      quarantine = true;
    }
  }
  // The reset in every thread waits for them: without the lock. Nothing
  // can hand the number out meanwhile (the backend still holds it), and a
  // change of the key now fails (key_still_allocated).
  if (!quarantine) return backend_->release_key(key);
  // Quarantined only once every thread is reset: a quarantine that ended
  // meanwhile could give the number to a new owner whose rights this reset
  // would then take. A thread the reset missed is reset again when the
  // number is released (release_key).
  backend_->set_rights_in(backend::kAllThreads, key, PKEY_DISABLE_ACCESS, &last_missed(), nullptr);
  std::lock_guard lock(space_);
  keys_.quarantine_locked(key);
  return 0;
}

int Runtime::reclaim_keys() {
  const std::uint64_t quarantined = keys_.quarantined_mask();
  return quarantined ? end_quarantines(quarantined) : 0;
}

std::uint64_t Runtime::quarantined_with_ranges() {
  const std::uint64_t quarantined = keys_.quarantined_mask();
  if (quarantined == 0) return 0;
  std::uint64_t with = 0;
  std::lock_guard lock(space_);
  for (int key = 1; key < kKeyLimit; ++key)
    if ((quarantined >> key) & 1)
      space_.for_each_of_locked(Tag::key(key), [&](const TaggedRange&) { with |= std::uint64_t{1} << key; });
  return with;
}

bool Runtime::quarantined_key_in_use_locked(int key) {
  // The kernel's word where it keeps keys; a failed read proves nothing.
  if (backend_->capabilities() & backend::kHardware) return os::kernel_key_in_use(key) != 0;
  return space_.tag_in_use_locked(Tag::key(key));  // records pruned from /proc/self/maps (kept if unreadable)
}

int Runtime::end_quarantines(std::uint64_t candidates) {
  const bool per_thread = keys_.per_thread_rights();
  std::uint64_t ended = 0;
  {
    std::lock_guard lock(space_);
    candidates &= keys_.quarantined_mask();  // another thread may have ended some
    for (int key = 1; key < kKeyLimit; ++key) {
      if (!((candidates >> key) & 1) || quarantined_key_in_use_locked(key)) continue;
      space_.forget_locked(Tag::key(key));
      keys_.end_quarantine_locked(key);
      ended |= std::uint64_t{1} << key;
      if (!per_thread) backend_->release_key(key);
    }
  }
  // As free: the backend's reset in every thread waits for them, unlocked;
  // it holds the numbers until then.
  if (per_thread)
    for (int key = 1; key < kKeyLimit; ++key)
      if ((ended >> key) & 1) backend_->release_key(key);
  return std::popcount(ended);
}

int Runtime::protect(void* addr, std::size_t len, int prot, int key) {
  if (key < -1 || (key > 0 && !keys_.is_allocated(key))) return -EINVAL;
  const auto start = reinterpret_cast<std::uintptr_t>(addr);
  // pkeys' own memory is not the program's to tag or protect.
  if (os::overlaps_internal_memory(start, os::page_round_up(len))) return -EACCES;
  if (!backend_) {
    if (key > 0) return -EINVAL;
    return static_cast<int>(sys::raw_syscall(SYS_mprotect, static_cast<long>(start), static_cast<long>(len), prot));
  }
  if (key == -1) {  // every page keeps its key, quarantined ones too
    std::lock_guard lock(space_);
    return space_.protect_keeping_tags_locked(start, len, prot);
  }
  // Retagging may take the last range of a quarantined number.
  return static_cast<int>(reclaiming([&]() -> long {
    std::lock_guard lock(space_);
    if (key > 0 && !keys_.is_allocated(key)) return -EINVAL;
    return space_.protect_locked(start, len, prot, Tag::key(key));
  }));
}

int Runtime::set(int key, unsigned rights) {
  if (!backend_ || !valid_rights(rights) || !keys_.is_allocated(key)) return -EINVAL;
  if (key == 0 && rights != 0) return -EINVAL;  // would lock the thread out of its stack
  // Per-thread rights touch only the caller's register: no lock. In the
  // register, the switch looks at the key table again inside its
  // restartable block and after its write, as pkey_set's inline one: a free
  // in another thread since the look above must not leave this thread
  // rights on the freed number.
  if (keys_.per_thread_rights()) {
    if (key == 0 || !backend_->rights_in_register()) return backend_->set_rights(key, rights);
    using backend::OwnedSwitch;
    const OwnedSwitch r = backend::register_set_rights_if_held(key, rights, keys_.register_fields_not_held_word());
    if (r == OwnedSwitch::done) return 0;
    if (r == OwnedSwitch::freed_meanwhile) backend::register_take_back_rights(key);
    return -EINVAL;
  }
  std::lock_guard lock(space_);
  if (!keys_.is_allocated(key)) return -EINVAL;
  return backend_->set_rights(key, rights);
}

int Runtime::get(int key) const {
  if (!keys_.is_allocated(key) || !backend_) return -EINVAL;
  return static_cast<int>(backend_->get_rights(key));
}

int Runtime::query(int key) const {
  if (!keys_.is_allocated(key) || !backend_) return -EBADF;
  return static_cast<int>(backend_->get_rights(key));
}

int Runtime::fault_key(const siginfo_t* si) noexcept {
  if (!si || !backend_) return -1;
  if (backend_->capabilities() & backend::kFaultPkey) return backend_->fault_key(*si);
  return fault_key_from_records(*si);
}

int Runtime::fault_key_from_records(const siginfo_t& si) noexcept {
  if (si.si_signo != SIGSEGV || si.si_code != SEGV_ACCERR) return -1;
  // The faulting thread does not hold the lock (a key fault is never
  // raised inside pkeys); another thread may, briefly.
  if (!space_.lock_from_signal_handler()) return -1;
  int key = -1;
  if (const auto r = space_.find_locked(reinterpret_cast<std::uintptr_t>(si.si_addr)); r && r->tag.is_key()) {
    // The key is to blame only where it denies what the pages would allow.
    if (os::rights_deny(backend_->get_rights(r->tag.key()), r->prot)) key = r->tag.key();
  }
  space_.unlock();
  return key;
}

int Runtime::fault_vkey(const siginfo_t* si) noexcept {
  if (!si || !vkeys_) return -1;
  const int hw = backend_->fault_key(*si);  // a hardware key the fault names
  if (hw < 0 && (si->si_signo != SIGSEGV || si->si_code != SEGV_ACCERR)) return -1;
  if (!space_.lock_from_signal_handler()) return -1;
  int vkey = -1;
  if (hw >= 0) {
    vkey = vkeys_->vkey_of_hardware_key_locked(hw);
  } else if (const auto r = space_.find_locked(reinterpret_cast<std::uintptr_t>(si->si_addr)); r && r->tag.is_vkey()) {
    vkey = r->tag.vkey();
  }
  space_.unlock();
  return vkey;
}

std::vector<pid_t>& Runtime::last_missed() {
  static thread_local std::vector<pid_t> missed;
  return missed;
}

int Runtime::set_thread(pid_t tid, int key, unsigned rights) {
  if (!backend_ || !valid_rights(rights) || !keys_.is_allocated(key) || (key == 0 && rights != 0)) return -EINVAL;
  if (tid <= 0) return -ESRCH;
  std::unique_lock lock(space_, std::defer_lock);
  if (!keys_.per_thread_rights()) lock.lock();
  return backend_->set_rights_in(tid, key, rights, &last_missed(), key_still_allocated);
}

int Runtime::set_all(int key, unsigned rights) {
  if (!backend_ || !valid_rights(rights) || !keys_.is_allocated(key) || (key == 0 && rights != 0)) return -EINVAL;
  std::unique_lock lock(space_, std::defer_lock);
  if (!keys_.per_thread_rights()) lock.lock();
  return backend_->set_rights_in(backend::kAllThreads, key, rights, &last_missed(), key_still_allocated);
}

int Runtime::sync_signal() noexcept { return backend::cross_thread_signal(); }

void Runtime::on_thread_start() noexcept { backend::register_this_thread(); }

int Runtime::sync_threads() {
  return backend_ ? backend_->sync_threads(&last_missed()) : backend::sync_threads_without_backend(&last_missed());
}

// A save: the thread's rights (2 bits a key, at most 16 keys) in the low
// half, the key table's allocation count in the high half.
std::uint64_t Runtime::save_rights() const noexcept {
  if (!backend_) return 0;
  const std::uint32_t epoch = keys_.allocations();  // before the rights: a key allocated between counts as new
  return (std::uint64_t{epoch} << 32) | (backend_->save_thread_rights() & 0xffffffffu);
}

void Runtime::restore_rights(std::uint64_t saved) noexcept {
  static_assert(KeyTable::kKeyLimit >= 16);
  if (!backend_) return;
  // Only the program's keys that are the same allocation as at the save.
  // Freed since: they stay disabled. Allocated since (a number freed and
  // handed to a new owner included): access-disabled, as the thread held
  // them before they were the program's, never the old owner's rights.
  // The vkey cache's keys are not the program's: a jump closes the vkeys
  // opened since (VKeys::close_above), which puts their bits back.
  // A free in another thread may come between the look at the table and
  // the switch: after the switch the table is looked at again (a locked
  // read between, as in pkey_set: either that free sees this thread's new copy
  // and resets it, or this look sees the key gone), and until it is the
  // same, once more, access-disabled on every key restored before and
  // gone since.
  const auto epoch = static_cast<std::uint32_t>(saved >> 32);
  const auto disable = [](std::uint64_t rights, std::uint64_t keys) {
    for (int k = 1; k < 16; ++k)
      if ((keys >> k) & 1)
        rights = (rights & ~(std::uint64_t{3} << (2 * k))) | (std::uint64_t{PKEY_DISABLE_ACCESS} << (2 * k));
    return rights;
  };
  std::uint64_t touched = 0;
  for (int pass = 0; pass < 64; ++pass) {
    const std::uint32_t allocations = keys_.allocations();
    const std::uint64_t allocated = keys_.allocated_mask() & 0xffffu;
    const std::uint64_t fresh = allocated & keys_.allocated_since(epoch);
    backend_->restore_thread_rights(disable(saved & 0xffffffffu, fresh | (touched & ~allocated)), allocated | touched);
    touched |= allocated;
    // A read-modify-write of the mask the free clears: its newest value,
    // ordered after this thread's switch (and its copy).
    if ((keys_.allocated_mask_latest() & 0xffffu) == allocated && keys_.allocations() == allocations) return;
  }
  backend_->restore_thread_rights(disable(0, touched), touched);  // the table never held still: none restored
}

int Runtime::signal_enter(const void* ucontext) noexcept {
  return backend_ ? backend_->adopt_interrupted_rights(ucontext) : 0;
}

int Runtime::make_execute_only(void* addr, std::size_t len) {
  if (!backend_ || !(backend_->capabilities() & backend::kExecuteOnly)) return -ENOTSUP;
  const auto start = reinterpret_cast<std::uintptr_t>(addr);
  int taken = -1;  // the key, when this call took it and then failed
  int r;
  {
    std::lock_guard lock(space_);
    // The input first (unaligned, unmapped, a hole): a failed call changes
    // no page and takes no key. Nothing to protect takes none either.
    if (const long m = os::check_mapped(start, len); m < 0) return static_cast<int>(m);
    if (len == 0) return 0;
    const bool had_key = keys_.execute_only_key_held_locked();
    const int key = keys_.execute_only_key_locked(*backend_, *vkeys_);
    if (key < 0) return key;
    r = space_.protect_untracked_locked(start, len, PROT_EXEC, key);
    if (r < 0 && !had_key) taken = keys_.forget_execute_only_key_locked(*backend_);
  }
  // Released without the lock: on the hardware it resets the number in
  // every thread. The backend holds the number until then.
  if (taken > 0) backend_->release_key(taken);
  return r;
}

int Runtime::set_label(int key, const char* label) {
  if (key <= 0 || !keys_.is_allocated(key)) return -EINVAL;
  std::lock_guard lock(space_);
  return keys_.set_label_locked(key, label);
}

int Runtime::get_label(int key, char* buf, std::size_t len) {
  if (key <= 0 || !keys_.is_allocated(key)) return -EINVAL;
  std::lock_guard lock(space_);
  return keys_.get_label_locked(key, buf, len);
}

bool Runtime::describe_fault(const siginfo_t* si, const void* ucontext, FaultReport* report) noexcept {
  const int key = fault_key(si);
  if (key < 0) return false;
  report->address = reinterpret_cast<std::uintptr_t>(si->si_addr);
  report->access = arch::fault_access_kind(ucontext);
  report->key = key;
  report->rights = backend_->interrupted_rights(ucontext, key);
  report->backend = backend_->name();
  if (space_.lock_from_signal_handler()) {
    if (const auto r = space_.find_locked(report->address)) {
      report->have_range = true;
      report->range_start = r->start;
      report->range_end = r->end;
      report->range_prot = r->prot;
    }
    if (key < KeyTable::kKeyLimit) std::memcpy(report->label, keys_.label_locked(key), sizeof report->label);
    space_.unlock();
  }
  return true;
}

}  // namespace pkeys::core
