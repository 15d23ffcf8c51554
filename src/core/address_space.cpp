// SPDX-License-Identifier: MIT
#include "core/address_space.hpp"

#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>

#include <array>
#include <cerrno>
#include <new>
#include <utility>

#include "arch/arch.hpp"
#include "os/pages.hpp"
#include "os/proc_maps.hpp"

namespace pkeys::core {

constinit std::atomic<std::size_t> AddressSpace::tagged_ranges_{0};

namespace {

// Set while this thread takes or holds the lock: a signal handler that
// interrupted it must not wait for it. Initial-exec: in a dlopen'ed
// library the default model may allocate this thread's block at its first
// access, which can be in a signal handler.
__attribute__((tls_model("initial-exec"))) thread_local bool t_holds_lock = false;

bool succeeded(long r) noexcept { return r >= 0 || r < -4095; }  // an address may look negative

}  // namespace

AddressSpace::AddressSpace(backend::Backend* backend) noexcept
    : backend_(backend), hardware_(backend && (backend->capabilities() & backend::kHardware)) {}

void AddressSpace::lock() noexcept {
  t_holds_lock = true;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  mu_.lock();
}

void AddressSpace::unlock() noexcept {
  mu_.unlock();
  std::atomic_signal_fence(std::memory_order_seq_cst);
  t_holds_lock = false;
}

bool AddressSpace::held_by_this_thread() noexcept { return t_holds_lock; }

bool AddressSpace::lock_from_signal_handler() noexcept {
  if (t_holds_lock) return false;  // the interrupted code holds it, or is taking it
  // Marked before trying, as lock() does: a handler nested in this one (a
  // signal between a successful try and the mark) must not wait for it.
  t_holds_lock = true;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  // Another thread holds it briefly; a handler waits at most ~10 ms for it
  // and then gives up (the caller reports "unknown"), never for good.
  timespec start{}, now{};
  ::clock_gettime(CLOCK_MONOTONIC, &start);  // async-signal-safe
  for (long spins = 0; !mu_.try_lock(); ++spins) {
    if ((spins & 63) == 63) {
      ::clock_gettime(CLOCK_MONOTONIC, &now);
      if ((now.tv_sec - start.tv_sec) * 1'000'000'000L + (now.tv_nsec - start.tv_nsec) > 10'000'000L) {
        std::atomic_signal_fence(std::memory_order_seq_cst);
        t_holds_lock = false;
        return false;
      }
    }
    sys::raw_syscall(SYS_sched_yield);
  }
  return true;
}

void AddressSpace::note_changes_locked() noexcept {
  tagged_ranges_.store(ranges_.size(), std::memory_order_release);
}

int AddressSpace::apply_locked(std::uintptr_t start, std::size_t len, int prot, Tag tag) noexcept {
  if (tag.is_vkey()) return vkeys_ ? vkeys_->protect_piece_locked(tag.vkey(), start, len, prot) : -EINVAL;
  return backend_->protect(start, len, prot, tag.untagged() ? -1 : tag.key());
}

int AddressSpace::protect_locked(std::uintptr_t start, std::size_t len, int prot, Tag tag) {
  // The kernel stops at a hole with the pages before it changed: fail first.
  if (const long m = os::check_mapped(start, len); m < 0) return static_cast<int>(m);
  const int r = tag.is_vkey() ? apply_locked(start, len, prot, tag)
                              : backend_->protect(start, len, prot, tag.key());  // untagged: key 0
  if (r < 0) return r;
  ranges_.assign(start, os::page_end(start, len), tag, prot);
  note_changes_locked();
  return 0;
}

int AddressSpace::protect_keeping_tags_locked(std::uintptr_t start, std::size_t len, int prot) {
  const std::uintptr_t end = os::page_end(start, len);
  if (ranges_.empty()) return backend_->protect(start, len, prot, -1);
  const std::vector<TaggedRange> pieces = ranges_.pieces(start, end);
  bool split = false;  // some piece needs its tag's own protection
  for (const TaggedRange& p : pieces) split |= p.tag.is_vkey() || (p.tag.is_key() && !hardware_);
  if (!split) {
    // Hardware keeps each page's key, and untagged pages have none of ours.
    if (int r = backend_->protect(start, len, prot, -1); r < 0) return r;
  } else {
    if (const long r = os::check_mapped(start, len); r < 0) return static_cast<int>(r);  // change nothing
    for (std::size_t i = 0; i < pieces.size(); ++i) {
      const TaggedRange& p = pieces[i];
      if (int r = apply_locked(p.start, p.end - p.start, prot, p.tag); r < 0) {
        // Undo the tagged pieces already changed; gaps had no recorded state.
        for (std::size_t j = 0; j < i; ++j)
          if (!pieces[j].tag.untagged())
            apply_locked(pieces[j].start, pieces[j].end - pieces[j].start, pieces[j].prot, pieces[j].tag);
        return r;
      }
    }
  }
  ranges_.reprotect(start, end, prot);
  note_changes_locked();
  return 0;
}

int AddressSpace::protect_untracked_locked(std::uintptr_t start, std::size_t len, int prot, int hw_key) {
  if (const long m = os::check_mapped(start, len); m < 0) return static_cast<int>(m);  // as protect_locked
  if (int r = backend_->protect(start, len, prot, hw_key); r < 0) return r;
  ranges_.erase(start, os::page_end(start, len));
  note_changes_locked();
  return 0;
}

void AddressSpace::drop_replaced_locked(Tag tag, unsigned current, bool quick_only) noexcept {
  // Pieces found replaced, a batch at a time: no allocation under the lock
  // (the program's malloc may take locks of its own, or sit in pages the
  // program tagged).
  std::array<std::pair<std::uintptr_t, std::uintptr_t>, 16> replaced;
  for (int pass = 0; pass < 64; ++pass) {
    std::size_t n = 0;
    bool more = false, known = true;
    kernel_.start_batch(quick_only);
    ranges_.for_each_of(tag, [&](const TaggedRange& t) {
      if (!known || more) return;
      const int expected = os::enforced_prot(t.prot, current);
      known = kernel_.for_each_piece(t.start, t.end, [&](std::uintptr_t s, std::uintptr_t e, int prot) {
        // Under READ_IMPLIES_EXEC the kernel adds PROT_EXEC to readable pages.
        const bool implied_exec = (expected & PROT_READ) && prot == (expected | PROT_EXEC);
        // Unmapped pieces are left to the prune of unmapped records (which
        // a failed read of the maps stops): they hold no one else's pages.
        if (prot == os::SelfProtections::kUnmapped || prot == expected || implied_exec) return;
        if (n < replaced.size())
          replaced[n++] = {s, e};
        else
          more = true;
      });
    });
    if (!known) break;  // a failed read proves nothing
    try {
      for (std::size_t i = 0; i < n; ++i) ranges_.erase(replaced[i].first, replaced[i].second);
    } catch (const std::bad_alloc&) {
      break;  // out of memory: the records stay, as when the kernel cannot be asked
    }
    if (!more) break;
  }
  note_changes_locked();
}

int AddressSpace::enforce_locked(Tag tag, unsigned rights, int current) noexcept {
  // Where the kernel answers with one ioctl a range (6.11+); before that it
  // would take a read of the whole of /proc/self/maps a switch (20x the
  // mprotect), and the records are trusted until the free.
  if (current != kUnchecked) drop_replaced_locked(tag, static_cast<unsigned>(current), true);
  std::uintptr_t run_start = 0, run_end = 0;
  int run_prot = -1;
  int error = 0;
  auto flush = [&] {
    if (run_prot < 0) return;
    const int r = backend_->protect(run_start, run_end - run_start, run_prot, 0);
    // A range unmapped behind pkeys' back (a raw munmap) is stale
    // bookkeeping, not a failure; it is pruned when its key goes.
    if (r < 0 && r != -ENOMEM && error == 0) error = r;
  };
  ranges_.for_each_of(tag, [&](const TaggedRange& t) {
    const int want = os::enforced_prot(t.prot, rights);
    if (run_prot == want && run_end == t.start) {
      run_end = t.end;
      return;
    }
    flush();
    run_start = t.start;
    run_end = t.end;
    run_prot = want;
  });
  flush();
  return error;
}

bool AddressSpace::prune_unmapped_locked() {
  // Unreadable mappings prove nothing: every record stays.
  const auto mapped = os::mapped_ranges_of_self();
  if (mapped) ranges_.keep_only(*mapped);
  note_changes_locked();
  return mapped.has_value();
}

bool AddressSpace::key_in_use_locked(int key) {
  const Tag tag = Tag::key(key);
  const int kernel = hardware_ ? os::kernel_key_in_use(key) : -ENOSYS;
  if (kernel >= 0) {
    if (kernel == 0) ranges_.erase_tag(tag);  // records the kernel no longer has
    note_changes_locked();
    return kernel == 1;
  }
  return tag_in_use_locked(tag);
}

bool AddressSpace::tag_in_use_locked(Tag tag) {
  if (!ranges_.has(tag)) return false;
  // Ranges unmapped by raw system calls, which pkeys did not see; for
  // emulated keys also ranges mapped again since (pages whose protection is
  // not the key's). One answer: where the maps cannot be read (no
  // descriptor left), the kept one is not asked either.
  if (prune_unmapped_locked() && tag.is_key() && !hardware_ && backend_)
    drop_replaced_locked(tag, backend_->get_rights(tag.key()), false);
  return ranges_.has(tag);
}

void AddressSpace::forget_locked(Tag tag) {
  ranges_.erase_tag(tag);
  note_changes_locked();
}

std::vector<TaggedRange> AddressSpace::snapshot() {
  std::lock_guard lock(*this);
  std::vector<TaggedRange> out;
  out.reserve(ranges_.size());
  ranges_.for_each([&](const TaggedRange& r) { out.push_back(r); });
  return out;
}

long AddressSpace::unmap(void* addr, std::size_t len) {
  std::lock_guard lock(*this);
  const auto start = reinterpret_cast<std::uintptr_t>(addr);
  const std::uintptr_t end = os::page_end(start, len);
  // Cut the records at the edges first: the erase after the call then
  // allocates nothing, so out of memory fails before any change.
  ranges_.split_at(start);
  ranges_.split_at(end);
  const long r = sys::raw_syscall(SYS_munmap, reinterpret_cast<long>(addr), static_cast<long>(len));
  if (r == 0) {
    ranges_.erase(start, end);
  } else {
    ranges_.merge_at(start);
    ranges_.merge_at(end);
  }
  note_changes_locked();
  return r;
}

long AddressSpace::map(void* addr, std::size_t len, int prot, int flags, int fd, long offset) {
  std::lock_guard lock(*this);
  // A new mapping lands where the caller asked (MAP_FIXED) or anywhere: only
  // a fixed one can replace recorded pages, so only its edges need cutting.
  const auto want = reinterpret_cast<std::uintptr_t>(addr);
  const bool fixed = (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) != 0;
  if (fixed) {
    ranges_.split_at(want);
    ranges_.split_at(os::page_end(want, len));
  }
  const long r = sys::raw_syscall(SYS_mmap, reinterpret_cast<long>(addr), static_cast<long>(len), prot, flags,
                                  fd, offset);
  const auto start = static_cast<std::uintptr_t>(r);
  if (succeeded(r)) {
    try {
      ranges_.erase(start, os::page_end(start, len));
    } catch (const std::bad_alloc&) {
      ranges_.drop_overlapping(start, os::page_end(start, len));  // records of pages that are gone
    }
  }
  if (fixed && !(succeeded(r) && start == want)) {
    ranges_.merge_at(want);
    ranges_.merge_at(os::page_end(want, len));
  }
  note_changes_locked();
  return r;
}

namespace {
constexpr int kMremapDontunmap = 4;  // MREMAP_DONTUNMAP (Linux 5.7), which older headers lack
}  // namespace

long AddressSpace::remap(void* old_addr, std::size_t old_len, std::size_t new_len, int flags, void* new_addr) {
  std::lock_guard lock(*this);
  const long r = sys::raw_syscall(SYS_mremap, reinterpret_cast<long>(old_addr), static_cast<long>(old_len),
                                  static_cast<long>(new_len), flags, reinterpret_cast<long>(new_addr));
  if (succeeded(r)) {
    const auto from = reinterpret_cast<std::uintptr_t>(old_addr);
    const auto to = reinterpret_cast<std::uintptr_t>(new_addr);
    try {
      // MREMAP_DONTUNMAP leaves the old range mapped, its VMA (and key in
      // the kernel) unchanged: its records stay, copied to the new range.
      std::vector<TaggedRange> kept;
      if (flags & kMremapDontunmap) kept = ranges_.pieces(from, os::page_end(from, old_len));
      if (flags & MREMAP_FIXED) ranges_.erase(to, os::page_end(to, new_len));  // MREMAP_FIXED unmaps what was there
      if (old_len == 0) {
        // A second mapping of a shared mapping's pages (the old one stays):
        // it carries the same tags (on the hardware, the kernel copies the
        // key), so that no alias of tagged pages escapes their rights.
        const auto at = static_cast<std::uintptr_t>(r);
        const std::vector<TaggedRange> source = ranges_.pieces(from, os::page_end(from, new_len));
        ranges_.erase(at, os::page_end(at, new_len));
        for (const TaggedRange& p : source)
          if (!p.tag.untagged()) ranges_.assign(p.start - from + at, p.end - from + at, p.tag, p.prot);
      } else {
        ranges_.move(from, os::page_round_up(old_len), static_cast<std::uintptr_t>(r), os::page_round_up(new_len));
      }
      for (const TaggedRange& p : kept)
        if (!p.tag.untagged()) ranges_.assign(p.start, p.end, p.tag, p.prot);
    } catch (const std::bad_alloc&) {
      // The pages moved; records that cannot follow them are dropped, never
      // left describing pages that are no longer there.
      ranges_.drop_overlapping(from, os::page_end(from, old_len));
      ranges_.drop_overlapping(static_cast<std::uintptr_t>(r), os::page_end(static_cast<std::uintptr_t>(r), new_len));
      if (flags & MREMAP_FIXED) ranges_.drop_overlapping(to, os::page_end(to, new_len));
    }
  }
  note_changes_locked();
  return r;
}

}  // namespace pkeys::core
