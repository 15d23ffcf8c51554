// SPDX-License-Identifier: MIT
// Readers for /proc/PID/maps and /proc/PID/smaps (the OS room).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace pkeys::os {

// One mapping of /proc/PID/smaps with the fields pkeys cares about.
struct Mapping {
  std::uintptr_t start = 0;
  std::uintptr_t end = 0;
  std::string perms;     // "rw-p"
  std::string name;      // path, [heap], ... or empty
  int protection_key = -1;  // ProtectionKey field; -1 where the kernel has none
};

// The mapped address ranges of this process, sorted, adjacent ones merged;
// nullopt when /proc/self/maps cannot be read (no descriptor left, /proc
// not mounted, a sandbox): a failed read proves nothing.
std::optional<std::vector<std::pair<std::uintptr_t, std::uintptr_t>>> mapped_ranges_of_self();

// Calls `f` for each mapping of process `pid` (0: this process), read from
// smaps. Returns false when the file cannot be read.
bool for_each_mapping(int pid, const std::function<void(const Mapping&)>& f);

// Whether a mapping of this process carries protection key `key`, as the
// kernel's smaps ProtectionKey field tells: 1 or 0; -ENOSYS when the kernel
// reports no keys, or smaps cannot be read (memory included).
int kernel_key_in_use(int key) noexcept;

// The kernel's protections of this process's pages, asked range by range:
// what tells pkeys' own pages from pages mapped over them behind its back.
// Linux 6.11+ answers each question with one PROCMAP_QUERY ioctl on
// /proc/self/maps, kept open between batches (opening it costs more than
// the mprotect the answer guards); older kernels with one read of the
// whole file per batch. Not thread-safe: the caller serialises.
class SelfProtections {
 public:
  static constexpr int kUnmapped = -1;
  SelfProtections() = default;
  SelfProtections(const SelfProtections&) = delete;
  SelfProtections& operator=(const SelfProtections&) = delete;

  // Starts a batch of questions about the address space as it is now.
  // `quick_only`: answer only where one question costs one ioctl (Linux
  // 6.11+), never by reading the whole file (a rights switch asks).
  void start_batch(bool quick_only = false) noexcept;
  // Calls f(start, end, prot) for consecutive pieces covering [start, end):
  // prot is the pieces' PROT_READ|PROT_WRITE|PROT_EXEC, or kUnmapped.
  // False when the kernel cannot be asked (no descriptor left, /proc not
  // mounted, a sandbox): a failed read proves nothing.
  // (A template: no std::function, which may allocate, under pkeys' lock.)
  template <class F>
  bool for_each_piece(std::uintptr_t start, std::uintptr_t end, F&& f) noexcept {
    std::uintptr_t at = start;
    while (at < end) {
      Vma v{};
      bool failed;
      const bool found = vma_at_or_after(at, v, &failed);
      if (failed) return false;
      if (!found || v.start >= end) {
        f(at, end, kUnmapped);
        break;
      }
      if (v.start > at) f(at, v.start, kUnmapped);
      const std::uintptr_t piece_start = v.start > at ? v.start : at;
      const std::uintptr_t piece_end = v.end < end ? v.end : end;
      f(piece_start, piece_end, v.prot);
      at = piece_end;
    }
    return true;
  }

 private:
  struct Vma {
    std::uintptr_t start, end;
    int prot;
  };
  // The mapping covering `addr`, or else the next one above it; false
  // when none, or (with *failed set) when the kernel cannot be asked.
  bool vma_at_or_after(std::uintptr_t addr, Vma& out, bool* failed) noexcept;
  bool query(std::uintptr_t addr, Vma& out, bool* failed) noexcept;
  bool open_maps() noexcept;
  bool still_ours() const noexcept;  // fd_ is the file open_maps opened
  bool read_table() noexcept;
  int fd_ = -1;
  unsigned forks_ = 0;   // forks seen when fd_ was opened (a child must not ask its parent's)
  unsigned long dev_ = 0, ino_ = 0;  // fd_'s file, to tell it from a number the program reused
  bool query_ = true;    // PROCMAP_QUERY works, as far as we know
  bool have_table_ = false;
  bool quick_only_ = false;
  std::vector<Vma> table_;
};

}  // namespace pkeys::os
