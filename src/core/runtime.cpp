// SPDX-License-Identifier: MIT
#include "core/runtime.hpp"

#include <pthread.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "arch/x86_64/signal_frame.hpp"
#include "arch/x86_64/syscall.hpp"
#include "backend/select.hpp"
#include "backend/thread_signal.hpp"
#include "os/pages.hpp"
#include "os/proc_maps.hpp"
#include "pkeys/pkeys.h"

namespace pkeys::core {

constinit std::atomic<std::size_t> g_tagged_ranges{0};

namespace {

bool valid_rights(unsigned rights) noexcept { return (rights & ~PKEYS_RIGHTS_MASK) == 0u; }

}  // namespace

void Runtime::unlock_after_fork() {
  backend::thread_signal_mutex().unlock();
  instance().mu_.unlock();
}

Runtime& Runtime::instance() {
  static Runtime* runtime = [] {
    auto* r = new Runtime();  // never destroyed: in use until the last exit handler
    // A child must not start with a lock some other thread held: take them
    // in the order every caller does (the Runtime's, then the handshake's).
    ::pthread_atfork(
        [] {
          instance().mu_.lock();
          backend::thread_signal_mutex().lock();
        },
        [] { unlock_after_fork(); }, [] { unlock_after_fork(); });
    return r;
  }();
  return *runtime;
}

Runtime::Runtime() {
  backend::Selection s = backend::select_backend();
  backend_ = std::move(s.backend);
  reason_ = std::move(s.reason);
  if (backend_) {
    per_thread_rights_ = (backend_->capabilities() & PKEYS_CAP_PER_THREAD_RIGHTS) != 0;
    vkeys_ = std::make_unique<VKeys>(*backend_, ranges_, mu_);
  }
}

int Runtime::alloc(unsigned flags, unsigned rights) {
  if ((flags & ~kAllocAllThreads) != 0 || !valid_rights(rights)) return -EINVAL;
  if (!backend_) return -ENOSPC;
  std::lock_guard lock(mu_);
  int key = backend_->acquire_key(rights);
  // The vkey cache never keeps a key the program asks for.
  while (key == -ENOSPC && vkeys_->surrender_key_locked()) key = backend_->acquire_key(rights);
  if (key < 0) return key;
  if (key >= kKeyLimit) {  // cannot be tracked: refuse rather than lose it
    backend_->release_key(key);
    return -ENOSPC;
  }
  if (flags & kAllocAllThreads) {
    const int r = backend_->set_rights_in(0, key, rights, ranges_, &last_missed());
    if (r < 0) {  // all threads or none: undo
      backend_->release_key(key);
      return r;
    }
  }
  labels_[key][0] = 0;
  allocated_.fetch_or(std::uint64_t{1} << key, std::memory_order_acq_rel);
  return key;
}

bool Runtime::key_in_use(int key) {
  const int kernel = backend_->key_in_use(key);
  if (kernel >= 0) {
    if (kernel == 0) ranges_.erase_key(key);  // records the kernel no longer has
    update_tagged_count();
    return kernel == 1;
  }
  if (!ranges_.has_key(key)) return false;
  // Ranges unmapped by raw system calls, which pkeys did not see.
  ranges_.keep_only(os::mapped_ranges_of_self());
  update_tagged_count();
  return ranges_.has_key(key);
}

int Runtime::free(int key) {
  if (key <= 0 || !is_allocated(key)) return -EINVAL;
  std::lock_guard lock(mu_);
  if (!is_allocated(key)) return -EINVAL;  // lost a race with another free
  if (key_in_use(key)) return -EBUSY;
  if (int r = backend_->release_key(key); r < 0) return r;
  allocated_.fetch_and(~(std::uint64_t{1} << key), std::memory_order_acq_rel);
  labels_[key][0] = 0;
  ranges_.erase_key(key);
  update_tagged_count();
  return 0;
}

int Runtime::protect(void* addr, std::size_t len, int prot, int key) {
  if (key < -1 || (key > 0 && !is_allocated(key))) return -EINVAL;
  const auto start = reinterpret_cast<std::uintptr_t>(addr);
  if (!backend_) {
    if (key > 0) return -EINVAL;
    return static_cast<int>(sys::raw_syscall(SYS_mprotect, static_cast<long>(start),
                                             static_cast<long>(len), prot));
  }
  std::lock_guard lock(mu_);
  if (key > 0 && !is_allocated(key)) return -EINVAL;
  const std::uintptr_t end = os::page_end(start, len);
  if (int r = key == -1 ? protect_keeping_tags(start, end, len, prot) : backend_->protect(start, len, prot, key, ranges_);
      r < 0)
    return r;
  if (key > 0)
    ranges_.assign(start, end, key, prot);
  else if (key == 0)
    ranges_.erase(start, end);
  else
    ranges_.reprotect(start, end, prot);
  update_tagged_count();
  return 0;
}

int Runtime::protect_keeping_tags(std::uintptr_t start, std::uintptr_t end, std::size_t len, int prot) {
  if (ranges_.empty()) return backend_->protect(start, len, prot, -1, ranges_);
  const auto pieces = ranges_.pieces(start, end);
  bool any_vkey = false;
  for (const TaggedRange& p : pieces) any_vkey |= is_vkey_tag(p.key);
  if (!any_vkey) return backend_->protect(start, len, prot, -1, ranges_);
  // Virtual-key pieces are enforced by the vkey layer, the rest by the backend.
  if (const long r = os::check_mapped(start, len); r < 0) return static_cast<int>(r);  // change nothing
  for (const TaggedRange& p : pieces) {
    const int r = is_vkey_tag(p.key) ? vkeys_->reprotect_locked(p, prot)
                                     : backend_->protect(p.start, p.end - p.start, prot, -1, ranges_);
    if (r < 0) return r;
  }
  return 0;
}

int Runtime::fault_vkey(const siginfo_t* si) noexcept {
  if (!si || !vkeys_ || !lock_from_signal_handler()) return -1;
  const int vkey = vkeys_->fault_vkey_locked(*si);
  mu_.unlock();
  return vkey;
}

int Runtime::set(int key, unsigned rights) {
  if (!backend_ || !valid_rights(rights) || !is_allocated(key)) return -EINVAL;
  if (key == 0 && rights != 0) return -EINVAL;  // would lock the thread out of its stack
  // Per-thread rights touch only the caller's register: no lock.
  if (per_thread_rights_)
    return backend_->set_rights(key, rights, ranges_);
  std::lock_guard lock(mu_);
  if (!is_allocated(key)) return -EINVAL;
  return backend_->set_rights(key, rights, ranges_);
}

int Runtime::get(int key) const {
  if (!is_allocated(key) || !backend_) return -EINVAL;
  return static_cast<int>(backend_->get_rights(key));
}

int Runtime::query(int key) const {
  if (!is_allocated(key) || !backend_) return -EBADF;
  return static_cast<int>(backend_->get_rights(key));
}

int Runtime::fault_key(const siginfo_t* si) noexcept {
  if (!si || !backend_) return -1;
  if (backend_->capabilities() & PKEYS_CAP_FAULT_PKEY) return backend_->fault_key(*si, ranges_);
  // The records are needed. The faulting thread cannot hold the lock (a
  // key fault is never raised inside pkeys), so another thread does, briefly.
  if (!lock_from_signal_handler()) return -1;
  const int key = backend_->fault_key(*si, ranges_);
  mu_.unlock();
  return key;
}

std::vector<pid_t>& Runtime::last_missed() {
  static thread_local std::vector<pid_t> missed;
  return missed;
}

int Runtime::set_thread(pid_t tid, int key, unsigned rights) {
  if (!backend_ || !valid_rights(rights) || !is_allocated(key) || (key == 0 && rights != 0)) return -EINVAL;
  if (tid <= 0) return -ESRCH;
  std::unique_lock lock(mu_, std::defer_lock);
  if (!per_thread_rights_) lock.lock();
  return backend_->set_rights_in(tid, key, rights, ranges_, &last_missed());
}

int Runtime::set_all(int key, unsigned rights) {
  if (!backend_ || !valid_rights(rights) || !is_allocated(key) || (key == 0 && rights != 0)) return -EINVAL;
  std::unique_lock lock(mu_, std::defer_lock);
  if (!per_thread_rights_) lock.lock();
  return backend_->set_rights_in(0, key, rights, ranges_, &last_missed());
}

int Runtime::sync_threads() {
  return backend::apply_in_threads({-1, 0}, 0, &last_missed());
}

std::uint64_t Runtime::save_rights() const noexcept {
  return backend_ ? backend_->save_thread_rights() : 0;
}

void Runtime::restore_rights(std::uint64_t saved) noexcept {
  // Only keys in use: a key freed since the save stays disabled.
  if (backend_)
    backend_->restore_thread_rights(saved, allocated_.load(std::memory_order_acquire) |
                                               vkeys_->hardware_key_mask());
}

int Runtime::signal_enter(const void* ucontext) noexcept {
  if (!backend_) return 0;
  return backend_->adopt_interrupted_rights(ucontext);
}

int Runtime::make_execute_only(void* addr, std::size_t len) {
  if (!backend_ || !(backend_->capabilities() & PKEYS_CAP_EXECUTE_ONLY)) return -ENOTSUP;
  std::lock_guard lock(mu_);
  if (execute_only_key_ < 0) {
    // A key of pkeys' own: every thread holds a free number access-disabled
    // (it was reset when last freed), and so it stays.
    int key = backend_->acquire_key(PKEY_DISABLE_ACCESS);
    while (key == -ENOSPC && vkeys_->surrender_key_locked()) key = backend_->acquire_key(PKEY_DISABLE_ACCESS);
    if (key < 0) return key;
    execute_only_key_ = key;
  }
  const auto start = reinterpret_cast<std::uintptr_t>(addr);
  if (int r = backend_->protect(start, len, PROT_EXEC, execute_only_key_, ranges_); r < 0) return r;
  ranges_.erase(start, os::page_end(start, len));  // no longer a key's or a vkey's
  update_tagged_count();
  return 0;
}

std::vector<TaggedRange> Runtime::ranges() const {
  std::lock_guard lock(mu_);
  std::vector<TaggedRange> out;
  out.reserve(ranges_.size());
  ranges_.for_each([&](const TaggedRange& r) { out.push_back(r); });
  return out;
}

int Runtime::set_label(int key, const char* label) {
  if (key <= 0 || !is_allocated(key)) return -EINVAL;
  std::lock_guard lock(mu_);
  if (!is_allocated(key)) return -EINVAL;
  std::size_t n = 0;
  for (; label && label[n] && n + 1 < sizeof labels_[key]; ++n) labels_[key][n] = label[n];
  labels_[key][n] = 0;
  return 0;
}

int Runtime::get_label(int key, char* buf, std::size_t len) const {
  if (key <= 0 || !is_allocated(key)) return -EINVAL;
  std::lock_guard lock(mu_);
  const std::size_t n = std::strlen(labels_[key]);
  if (buf && len > 0) {
    const std::size_t copy = n < len ? n : len - 1;
    std::memcpy(buf, labels_[key], copy);
    buf[copy] = 0;
  }
  return static_cast<int>(n);
}

bool Runtime::lock_from_signal_handler() noexcept {
  for (long spins = 0; !mu_.try_lock(); ++spins) {
    if (spins > 10'000'000) return false;
    sys::raw_syscall(SYS_sched_yield);
  }
  return true;
}

bool Runtime::describe_fault(const siginfo_t* si, const void* ucontext, FaultReport* report) noexcept {
  const int key = fault_key(si);
  if (key < 0) return false;
  report->address = reinterpret_cast<std::uintptr_t>(si->si_addr);
  report->access = arch::frame_access_kind(ucontext);
  report->key = key;
  report->rights = backend_->interrupted_rights(ucontext, key);
  report->backend = backend_->name();
  if (lock_from_signal_handler()) {
    if (const auto r = ranges_.find(report->address)) {
      report->have_range = true;
      report->range_start = r->start;
      report->range_end = r->end;
      report->range_prot = r->prot;
    }
    std::memcpy(report->label, labels_[key], sizeof report->label);
    mu_.unlock();
  }
  return true;
}

long Runtime::unmap(void* addr, std::size_t len) {
  std::lock_guard lock(mu_);
  const long r = sys::raw_syscall(SYS_munmap, reinterpret_cast<long>(addr), static_cast<long>(len));
  if (r == 0) {
    const auto start = reinterpret_cast<std::uintptr_t>(addr);
    ranges_.erase(start, os::page_end(start, len));
    update_tagged_count();
  }
  return r;
}

long Runtime::map(void* addr, std::size_t len, int prot, int flags, int fd, long offset) {
  std::lock_guard lock(mu_);
  const long r = sys::raw_syscall(SYS_mmap, reinterpret_cast<long>(addr), static_cast<long>(len),
                                  prot, flags, fd, offset);
  if (r >= 0 || r < -4095) {  // success: an address, which may look negative
    const auto start = static_cast<std::uintptr_t>(r);
    ranges_.erase(start, os::page_end(start, len));
    update_tagged_count();
  }
  return r;
}

long Runtime::remap(void* old_addr, std::size_t old_len, std::size_t new_len, int flags,
                    void* new_addr) {
  std::lock_guard lock(mu_);
  const long r = sys::raw_syscall(SYS_mremap, reinterpret_cast<long>(old_addr),
                                  static_cast<long>(old_len), static_cast<long>(new_len), flags,
                                  reinterpret_cast<long>(new_addr));
  if (r >= 0 || r < -4095) {
    const auto from = reinterpret_cast<std::uintptr_t>(old_addr);
    const std::uintptr_t mask = os::page_size() - 1;
    if (flags & MREMAP_FIXED) {
      const auto to = reinterpret_cast<std::uintptr_t>(new_addr);
      ranges_.erase(to, os::page_end(to, new_len));  // MREMAP_FIXED unmaps what was there
    }
    ranges_.move(from, (old_len + mask) & ~mask, static_cast<std::uintptr_t>(r),
                 (new_len + mask) & ~mask);
    update_tagged_count();
  }
  return r;
}

}  // namespace pkeys::core
